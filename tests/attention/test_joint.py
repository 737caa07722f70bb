"""FPE, MasaCtrl and Prompt-to-Prompt on joint attention (MM-DiT), against a float64 reference written in the tests
(``support/joint_reference.py``) that builds the joint maps, edits them, and applies them: SD3's joint block, FLUX's
double-stream and single-stream blocks (with their rotary positions). A call that edits no row equals diffusers' own
processor; every mode changes the target's image tokens and nothing else."""

import pytest
import torch

from freeprompt.attention.joint import joint_attention
from freeprompt.attention.rules import JointEdit
from freeprompt.models.random_transformers import random_transformer_pipeline
from support.joint_reference import reference

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


def run(blocks, name, mode, sources, scales=()):
    attn, place = blocks[name]
    hidden, text, rotary = inputs(attn, place, blocks["flux"])
    with torch.no_grad():
        ours = joint_attention(attn, hidden, text, JointEdit(mode, sources, scales), place, TEXT, rotary)
        want = reference(attn, hidden, text, rotary, mode, sources, torch.tensor(scales[0][1]) if scales else None,
                         text_tokens=TEXT)
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
