"""FPE, MasaCtrl and Prompt-to-Prompt on joint attention (MM-DiT), against a float64 reference written here that builds
the joint maps, edits them, and applies them: SD3's joint block, FLUX's double-stream and single-stream blocks (with
their rotary positions). A call that edits no row equals diffusers' own processor; every mode changes the target's
image tokens and nothing else."""

import pytest
import torch

from freeprompt.attention.joint import joint_attention
from freeprompt.attention.rules import JointEdit
from freeprompt.models.random_transformers import random_transformer_pipeline

TOL = 1e-10
TEXT = 5


@pytest.fixture(scope="module")
def blocks():
    sd3 = random_transformer_pipeline("tiny-sd3", torch_dtype=torch.float64).transformer
    flux = random_transformer_pipeline("tiny-flux", torch_dtype=torch.float64).transformer
    return {"sd3": (sd3.transformer_blocks[0].attn, "double"),
            "flux-double": (flux.transformer_blocks[0].attn, "double"),
            "flux-single": (flux.single_transformer_blocks[0].attn, "single"), "flux": flux}


def inputs(attn, place, flux_model):
    torch.manual_seed(0)
    width = attn.to_q.in_features
    image = torch.randn(3, 16, width, dtype=torch.float64)
    text_width = attn.add_k_proj.in_features if getattr(attn, "add_k_proj", None) is not None else width
    text = torch.randn(3, TEXT, text_width, dtype=torch.float64)
    rotary = None
    if type(attn).__name__ == "FluxAttention":
        ids = torch.cat([torch.zeros(TEXT, 3), torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0),
                                                                          torch.arange(4.0), indexing="ij"),
                                                           -1).reshape(16, 3)]).double()
        rotary = flux_model.pos_embed(ids)
    if place == "single":
        return torch.cat([text, image], dim=1), None, rotary
    return image, text, rotary


def reference(attn, hidden, text, rotary, mode, sources, scale=None):
    """The joint maps built whole (softmax of Q K^T / sqrt(d)), the target rows' image rows edited, applied to V."""
    flux = type(attn).__name__ == "FluxAttention"
    heads = attn.heads

    def split(x):
        return x.view(x.shape[0], x.shape[1], heads, -1)

    def norm(f, x):
        return x if f is None else f(x)

    q, k, v = split(attn.to_q(hidden)), split(attn.to_k(hidden)), split(attn.to_v(hidden))
    q, k = norm(attn.norm_q, q), norm(attn.norm_k, k)
    if text is not None:
        tq, tk, tv = split(attn.add_q_proj(text)), split(attn.add_k_proj(text)), split(attn.add_v_proj(text))
        tq, tk = norm(attn.norm_added_q, tq), norm(attn.norm_added_k, tk)
        order = (lambda a, b: torch.cat([b, a], 1)) if flux else (lambda a, b: torch.cat([a, b], 1))
        q, k, v = order(q, tq), order(k, tk), order(v, tv)
    if rotary is not None:
        from diffusers.models.embeddings import apply_rotary_emb

        q, k = apply_rotary_emb(q, rotary, sequence_dim=1), apply_rotary_emb(k, rotary, sequence_dim=1)
    q, k, v = (x.permute(0, 2, 1, 3) for x in (q, k, v))
    n = q.shape[2]
    img = list(range(TEXT, n)) if (flux or text is None) else list(range(0, n - TEXT))
    txt = [i for i in range(n) if i not in img]
    d = q.shape[-1]
    out = (q @ k.transpose(-1, -2) / d ** 0.5).softmax(-1) @ v
    for row, src in enumerate(sources):
        if src == row:
            continue
        logits = q[row, :, img] @ k[row].transpose(-1, -2) / d ** 0.5  # (heads, image queries, all keys)
        values = v[row].clone()
        if mode == "row":
            logits = q[src, :, img] @ k[src].transpose(-1, -2) / d ** 0.5
        elif mode == "image":
            logits[..., img] = (q[src, :, img] @ k[src].transpose(-1, -2) / d ** 0.5)[..., img]
        elif mode == "kv":
            logits[..., img] = (q[row, :, img] @ k[src].transpose(-1, -2) / d ** 0.5)[..., img]
            values[:, img] = v[src, :, img]
        else:  # text
            logits[..., txt] = (q[src, :, img] @ k[src].transpose(-1, -2) / d ** 0.5)[..., txt]
            if scale is not None:
                values[:, txt] = values[:, txt] * scale[None, :, None]
        out[row, :, img] = logits.softmax(-1) @ values
    out = out.permute(0, 2, 1, 3).flatten(2)
    if text is None:
        return out
    image_out, text_out = (out[:, TEXT:], out[:, :TEXT]) if flux else (out[:, :n - TEXT], out[:, n - TEXT:])
    image_out = attn.to_out[1](attn.to_out[0](image_out))
    return image_out, (text_out if attn.context_pre_only else attn.to_add_out(text_out))


def run(blocks, name, mode, sources, scales=()):
    attn, place = blocks[name]
    hidden, text, rotary = inputs(attn, place, blocks["flux"])
    with torch.no_grad():
        ours = joint_attention(attn, hidden, text, JointEdit(mode, sources, scales), place, TEXT, rotary)
        want = reference(attn, hidden, text, rotary, mode, sources, torch.tensor(scales[0][1]) if scales else None)
        original = attn.processor(attn, hidden, text, None, rotary) if rotary is not None else \
            attn.processor(attn, hidden, text)
    return ours, want, original


def flat(x):
    return torch.cat([t.flatten(1) for t in x], 1) if isinstance(x, tuple) else x.flatten(1)


@pytest.mark.parametrize("name", ["sd3", "flux-double", "flux-single"])
def test_no_edited_row_equals_the_diffusers_processor(blocks, name):
    ours, want, original = run(blocks, name, "row", (0, 1, 2))
    assert (flat(ours) - flat(original)).abs().max().item() <= TOL
    assert (flat(want) - flat(original)).abs().max().item() <= TOL  # the reference too


@pytest.mark.parametrize("name", ["sd3", "flux-double", "flux-single"])
@pytest.mark.parametrize("mode", ["row", "image", "kv", "text"])
def test_each_mode_equals_the_materialising_reference(blocks, name, mode):
    scales = ((1, tuple(1.0 if i != 2 else 3.0 for i in range(TEXT))),) if mode == "text" else ()
    ours, want, original = run(blocks, name, mode, (0, 0, 2), scales)
    assert (flat(ours) - flat(want)).abs().max().item() <= TOL, (name, mode)
    changed = (flat(ours) - flat(original)).abs()
    assert changed[1].max().item() > 1e-6  # the target row changed
    assert changed[0].max().item() <= TOL and changed[2].max().item() <= TOL  # the source and the unedited row not
