"""FPE through SDPA against a map-materialising reference, and the invariants of the edit.

The reference comparison runs in float64: a randomly initialised UNet with guidance 7.5 amplifies float32
rounding (the *unedited* fp32 einsum and SDPA paths already drift apart by ~1e-4 after 6 steps on latents
of magnitude ~19), which would hide nothing but also prove nothing. In float64 a wrong row, head, layer or
step shows up as a difference of order 1e-2 while the correct implementation agrees to ~1e-11.
"""

import numpy as np
import pytest
import torch

from freeprompt.attention import StepRange, discover_layers
from freeprompt.diffusion import ddim_scheduler, encode_prompts, initial_latents, latent_shape, sample
from freeprompt.editing.generated import edit
from support.reference import reference_processors
from support.steps import StepCallback

PROMPTS = ["a red car", "a blue car", "a photo of a green truck"]
STEPS = 6
SIZE = 64  # 8x8 latents on the tiny pipeline


def reference_edit(pipe, prompts, layers, step_range, edit_unconditional, guidance=7.5, seed=3):
    shape = latent_shape(pipe, SIZE, SIZE)
    registry = discover_layers(pipe.unet)
    names = {layer.name for layer in registry.select(layers, "self", shape[2:])}
    noise = initial_latents(seed, shape, "cpu", pipe.unet.dtype)
    emb = encode_prompts(pipe, prompts, "", guidance > 1, "cpu")
    rng = StepRange.parse(step_range)
    state = {"edit": False}

    def on_step(i):
        state["edit"] = int(rng.start * STEPS) <= i < int(rng.end * STEPS)  # the official code's rule

    with reference_processors(pipe.unet, registry, names, len(prompts), edit_unconditional, state):
        return sample(pipe.unet, ddim_scheduler(pipe.scheduler.config), noise.expand(len(prompts), -1, -1, -1).clone(),
                      emb, STEPS, guidance, hooks=[StepCallback(on_step)])


@pytest.mark.parametrize("layers,step_range,uncond", [
    ("<=4x4", "0:0.8", False),
    ("all", "0:1", True),
    ("1,3,5-7", "0.2:0.6", False),
    ("14-16", "0.5:1", True),
])
def test_sdpa_fpe_equals_map_materialising_reference(tiny_pipe64, layers, step_range, uncond):
    tiny_pipe = tiny_pipe64
    ours = edit(tiny_pipe, PROMPTS[0], PROMPTS[1:], seed=3, steps=STEPS, height=SIZE, width=SIZE,
                layers=layers, self_replace=step_range, edit_unconditional=uncond, progress=False)
    ref = reference_edit(tiny_pipe, PROMPTS, layers, step_range, uncond)
    diff = (ours.latents - ref).abs().max().item()
    assert diff <= 1e-5, diff
    # the edit must actually change the targets relative to no editing, or the comparison proves little
    plain = edit(tiny_pipe, PROMPTS[0], PROMPTS[1:], seed=3, steps=STEPS, height=SIZE, width=SIZE,
                 layers=layers, self_replace="0:0", progress=False)
    assert (plain.latents[1:] - ours.latents[1:]).abs().max().item() > 1e-3
    assert (plain.latents[0] - ours.latents[0]).abs().max().item() <= 1e-5  # the source is never changed


def test_without_guidance_matches_reference(tiny_pipe64):
    tiny_pipe = tiny_pipe64
    ours = edit(tiny_pipe, PROMPTS[0], PROMPTS[1:], seed=3, steps=STEPS, height=SIZE, width=SIZE, guidance=1.0,
                layers="all", self_replace="0:1", progress=False)
    ref = reference_edit(tiny_pipe, PROMPTS, "all", "0:1", False, guidance=1.0)
    assert (ours.latents - ref).abs().max().item() <= 1e-5
    plain = edit(tiny_pipe, PROMPTS[0], PROMPTS[1:], seed=3, steps=STEPS, height=SIZE, width=SIZE, guidance=1.0,
                 layers="all", self_replace="0:0", progress=False)
    assert (plain.latents[1:] - ours.latents[1:]).abs().max().item() > 1e-3


def test_one_unet_call_in_float32_matches_reference(tiny_pipe):
    """Without many steps to amplify rounding, fp32 SDPA-FPE and the fp32 einsum reference agree to fp32
    rounding through 32 attention layers (outputs are of order 1; seen: 3.5e-5)."""
    from freeprompt.attention import BatchLayout, EditControl, Rule, controlled

    unet = tiny_pipe.unet
    registry = discover_layers(unet)
    names = frozenset(layer.name for layer in registry.of_kind("self"))
    torch.manual_seed(0)
    x = torch.randn(6, 4, 8, 8)
    emb = torch.randn(6, 77, 32)
    layout = BatchLayout.one_source(2)
    rule = Rule("self", names, StepRange(0, 1), layout.mix("source", "source", "own", ("uncond", "cond")), "fpe")
    control = EditControl(layout, [rule], num_steps=1, latent_hw=(8, 8))
    with torch.no_grad():
        with controlled(unet, registry, control):
            control.begin_step(0)
            ours = unet(x, 500, encoder_hidden_states=emb).sample
        with reference_processors(unet, registry, names, 3, True, {"edit": True}):
            ref = unet(x, 500, encoder_hidden_states=emb).sample
        plain = unet(x, 500, encoder_hidden_states=emb).sample
    assert (ours - ref).abs().max().item() <= 2e-4
    assert (ours - plain).abs().max().item() > 1e-2


def test_target_equal_to_source_gives_the_source_image(tiny_pipe):
    res = edit(tiny_pipe, "a red car", ["a red car"], seed=1, steps=STEPS, height=SIZE, width=SIZE, progress=False)
    assert torch.equal(res.latents[0], res.latents[1])
    assert np.array_equal(np.asarray(res.images[0]), np.asarray(res.images[1]))


def test_empty_step_range_is_plain_generation_of_the_target(tiny_pipe):
    res = edit(tiny_pipe, "a red car", ["a blue car"], seed=1, steps=STEPS, height=SIZE, width=SIZE,
               self_replace="0.5:0.5", progress=False)
    alone = edit(tiny_pipe, "a blue car", ["a blue car"], seed=1, steps=STEPS, height=SIZE, width=SIZE,
                 self_replace="0:0", progress=False)
    # Same prompt and noise in a batch of the same size: bit-identical.
    assert torch.equal(res.latents[1], alone.latents[0])


def test_empty_step_range_matches_diffusers_pipeline(tiny_pipe):
    """Our loop with no editing reproduces diffusers' own StableDiffusionPipeline on the same noise."""
    res = edit(tiny_pipe, "a red car", ["a blue car"], seed=2, steps=STEPS, height=SIZE, width=SIZE,
               self_replace="0:0", progress=False)
    tiny_pipe.scheduler = ddim_scheduler(tiny_pipe.scheduler.config)
    out = tiny_pipe(["a red car", "a blue car"], num_inference_steps=STEPS, guidance_scale=7.5, height=SIZE, width=SIZE,
                    latents=res.initial_latents.expand(2, -1, -1, -1), output_type="latent").images
    assert (out - res.latents).abs().max().item() <= 1e-5


def test_processors_are_restored_after_the_edit_and_after_an_error(tiny_pipe):
    before = dict(tiny_pipe.unet.attn_processors)
    edit(tiny_pipe, "a red car", ["a blue car"], steps=2, height=SIZE, width=SIZE, progress=False)
    assert tiny_pipe.unet.attn_processors == before

    def explode(_):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        edit(tiny_pipe, "a red car", ["a blue car"], steps=2, height=SIZE, width=SIZE, progress=explode)
    assert tiny_pipe.unet.attn_processors == before


def test_same_seed_gives_bit_identical_pngs(tiny_pipe, tmp_path):
    from freeprompt.io.outputs import save_edit

    a = edit(tiny_pipe, "a red car", ["a blue car"], seed=5, steps=3, height=SIZE, width=SIZE, progress=False)
    b = edit(tiny_pipe, "a red car", ["a blue car"], seed=5, steps=3, height=SIZE, width=SIZE, progress=False)
    save_edit(a, tmp_path / "a", model={"id": "tiny"})
    save_edit(b, tmp_path / "b", model={"id": "tiny"})
    for name in ("source.png", "target_1.png", "grid.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
