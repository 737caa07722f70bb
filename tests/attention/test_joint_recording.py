"""Recording an MM-DiT's joint attention (SD3 layout), in float64 against a processor written here that builds the
joint maps whole: the image queries' map over the text keys (the image-to-text block, "cross") and over the image
keys (the image-to-image block, "self"), each normalised over its own keys, head-averaged, conditional rows, every
step. Recording leaves generation unchanged; FLUX, and recording an edited joint layer, are refused in one line."""

import pytest
import torch

from freeprompt.attention import discover_layers, record_attention
from freeprompt.attention.processors import installed_processors
from freeprompt.diffusion import sample
from freeprompt.diffusion.denoisers import denoiser_for
from freeprompt.diffusion.schedulers import make_scheduler
from freeprompt.errors import BadInput
from freeprompt.models.random_transformers import random_transformer_pipeline
from support.joint_reference import reference

STEPS, GUIDANCE = 3, 3.0
PROMPTS = ["a red car", "a blue bird"]


@pytest.fixture(scope="module")
def sd3():
    return random_transformer_pipeline("tiny-sd3", torch_dtype=torch.float64)


class MapReference:
    """SD3's joint attention through the materialising reference, summing the head-averaged blocks of the
    conditional rows (image queries over text keys, over image keys; each block's own softmax)."""

    def __init__(self, sums: dict, name: str):
        self.sums, self.name = sums, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        heads, n_image = attn.heads, hidden_states.shape[1]

        def split(x, norm):
            x = x.view(x.shape[0], x.shape[1], heads, -1)
            return (x if norm is None else norm(x)).permute(0, 2, 1, 3)

        q = split(attn.to_q(hidden_states), attn.norm_q)
        k = split(attn.to_k(hidden_states), attn.norm_k)
        tk = split(attn.add_k_proj(encoder_hidden_states), attn.norm_added_k)
        cond = slice(q.shape[0] // 2, None)
        d = q.shape[-1]
        for kind, keys in (("cross", tk), ("self", k)):
            maps = (q[cond] @ keys[cond].transpose(-1, -2) / d ** 0.5).softmax(-1).mean(1)
            key = (kind, self.name)
            self.sums[key] = self.sums.get(key, 0) + maps
        assert q.shape[2] == n_image
        return reference(attn, hidden_states, encoder_hidden_states, None, "row", tuple(range(q.shape[0])))


def plain_run(pipe, processors=None):
    denoiser = denoiser_for(pipe)
    noise = torch.randn(len(PROMPTS), 16, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    conditioning = denoiser.encode(PROMPTS, "", True, "cpu")
    scheduler = make_scheduler("flow", pipe.scheduler.config)
    if processors is None:
        return sample(denoiser, scheduler, noise, conditioning, STEPS, GUIDANCE)
    with installed_processors(denoiser.network, processors):
        return sample(denoiser, scheduler, noise, conditioning, STEPS, GUIDANCE)


def test_joint_maps_equal_the_materialising_reference(sd3):
    layers = discover_layers(sd3.transformer).of_kind("joint")
    sums: dict = {}
    want_latents = plain_run(sd3, {layer.processor_key: MapReference(sums, layer.name) for layer in layers})
    for kind in ("cross", "self"):
        with record_attention(sd3, kind=kind, tokens=None, latent_hw=(8, 8)) as rec:
            latents = plain_run(sd3)
        assert (latents - want_latents).abs().max().item() <= 1e-9  # recording changes nothing
        maps = rec.maps()
        assert sorted(maps) == sorted(layer.name for layer in layers)
        for layer in layers:
            want = sums[(kind, layer.name)] / STEPS
            got = maps[layer.name]
            if kind == "cross":  # (rows, text tokens, 4, 4) from (rows, 16 image tokens, text tokens)
                want = want.transpose(1, 2).reshape(got.shape)
            assert got.shape[0] == len(PROMPTS) and (got - want).abs().max().item() <= 1e-9
            rows = got.sum(1) if kind == "cross" else got.sum(-1)  # each block a distribution over its keys
            assert torch.allclose(rows, torch.ones_like(rows), atol=1e-9)


def test_word_maps_come_from_clip_positions(sd3):
    from freeprompt.attention.tokens import word_token_indices

    with record_attention(sd3, kind="cross", tokens=None, latent_hw=(8, 8)) as rec:
        plain_run(sd3)
    full = rec.maps()
    words = rec.word_maps("red", PROMPTS[:1] * 0 + ["a red car", "a red bird"])
    position = word_token_indices(sd3.tokenizer, "a red car", "red")
    for name, got in words.items():
        assert torch.equal(got[0], full[name][0, position].mean(0))
    with record_attention(sd3, kind="cross", tokens={"w": [2]}, latent_hw=(8, 8)) as rec:
        plain_run(sd3)
    assert next(iter(rec.maps("w").values())).shape == (2, 4, 4)


def test_flux_and_edited_joint_layers_are_refused_in_one_line(sd3):
    from freeprompt.editing.generated import edit
    from freeprompt.editing.methods import FPE

    flux = random_transformer_pipeline("tiny-flux")
    with pytest.raises(BadInput, match="FLUX"):
        with record_attention(flux, kind="cross"):
            pass
    with pytest.raises(BadInput, match="edited and recorded"):
        with record_attention(sd3, kind="self", latent_hw=(8, 8)):
            edit(sd3, "a red car", ["a blue car"], method=FPE(), steps=2, height=64, width=64, progress=False,
                 decode=False)
