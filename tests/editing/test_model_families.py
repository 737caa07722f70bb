"""Stable Diffusion 2.x (v-prediction, linear projections, a head count per block) and SDXL (two text encoders,
pooled embeddings, size conditioning, transformer depth > 1) on tiny random configs, the editing floor: FPE against
the map-materialising reference, every method, and real-image inversions. (Their layers are tested in
tests/attention/test_model_families_layers.py, the sampling loop against diffusers' own pipelines in
tests/diffusion/test_model_families_loop.py, loading in tests/models/test_loading.py.)"""

import pytest
import torch
from PIL import Image

from freeprompt.attention import StepRange, discover_layers
from freeprompt.diffusion import ddim_scheduler, encode_prompts, initial_latents, latent_shape, sample
from freeprompt.editing.generated import edit
from freeprompt.editing.inversion import invert, reconstruct
from freeprompt.editing.methods import P2P, MasaCtrl, PnP, build_method
from freeprompt.editing.real import edit_real
from freeprompt.models.random import random_pipeline
from freeprompt.shapes import world
from support.reference import reference_processors
from support.steps import CopySource, StepCallback

SIZE, STEPS = 64, 4
PROMPTS = ["a red car", "a blue car", "a photo of a green truck"]


@pytest.fixture(scope="module", params=["tiny-sd2", "tiny-sdxl"])
def pipe64(request):
    return random_pipeline(request.param, seed=0, torch_dtype=torch.float64)


@pytest.fixture(scope="module", params=["tiny-sd2", "tiny-sdxl"])
def pipe(request):
    return random_pipeline(request.param, seed=0)


@pytest.mark.parametrize("layers,steps,shared", [("all", "0:1", 0), ("<=2x2", "0.25:0.75", 0),
                                                 ("<=2x2", "0.25:0.75", 2)])
def test_fpe_equals_materialising_reference(pipe64, layers, steps, shared):
    """FPE, and FPE with a shared start 0:0.5 (after steps 0 and 1 of 4 the targets take the source's latents)."""
    shape = latent_shape(pipe64, SIZE, SIZE)
    method = build_method("fpe", {"layers": layers, "self_replace": steps, "shared_start": f"0:{shared / STEPS}"})
    ours = edit(pipe64, PROMPTS[0], PROMPTS[1:], method=method, seed=3, steps=STEPS, height=SIZE, width=SIZE,
                progress=False).latents
    registry = discover_layers(pipe64.unet)
    names = {layer.name for layer in registry.select(layers, "self", shape[2:])}
    noise = initial_latents(3, shape, "cpu", pipe64.unet.dtype).expand(3, -1, -1, -1).clone()
    cond = encode_prompts(pipe64, PROMPTS, "", True, "cpu", (SIZE, SIZE))
    rng, state = StepRange.parse(steps), {"edit": False}

    def on_step(i):
        state["edit"] = rng.contains(i, STEPS)

    with reference_processors(pipe64.unet, registry, names, 3, False, state):
        ref = sample(pipe64.unet, ddim_scheduler(pipe64.scheduler.config), noise, cond, STEPS, 7.5,
                     hooks=[StepCallback(on_step), CopySource(shared)])
    assert (ours - ref).abs().max().item() <= 1e-5
    plain = edit(pipe64, PROMPTS[0], PROMPTS[1:], seed=3, steps=STEPS, height=SIZE, width=SIZE, self_replace="0:0",
                 progress=False).latents
    assert (plain[1:] - ours[1:]).abs().max().item() > 1e-3


@pytest.mark.parametrize("method", [P2P(), P2P(mode="refine", blend=("car", "truck")), MasaCtrl(), PnP(),
                                    build_method("fpe+p2p"), MasaCtrl(mask_words=("car", "truck"))])
def test_every_method_runs(pipe, method):
    prompts = ["a red car", "a blue truck"]
    if method.name == "p2p" and method.mode == "replace":
        prompts = ["a red car", "a blue car"]
    out = edit(pipe, prompts[0], prompts[1:], method=method, seed=1, steps=STEPS, height=SIZE, width=SIZE,
               progress=False)
    plain = edit(pipe, prompts[0], prompts[1:], method=build_method("plain"), seed=1, steps=STEPS, height=SIZE,
                 width=SIZE, progress=False)
    assert torch.isfinite(out.latents).all() and (out.latents[1] - plain.latents[1]).abs().max().item() > 1e-4
    assert out.params["edited_layers"]


@pytest.fixture(scope="module")
def photo():
    return Image.fromarray(world.random_sample(3, size=SIZE, color="red", shape="circle").image)


@pytest.mark.parametrize("inversion", ["direct", "ddim", "null-text", "negative-prompt"])
def test_real_image_inversions(pipe, photo, inversion):
    result = edit_real(pipe, photo, "a red circle", ["a blue circle"], inversion=inversion, steps=STEPS,
                       progress=False)
    assert len(result.images) == 2 and torch.isfinite(result.latents).all()
    if inversion in ("direct", "ddim"):  # the source branch ends exactly on the image's latent
        assert result.params["reconstruction_latent_rmse"] < 1e-5


def test_negative_prompt_inversion_carries_the_pooled_embedding(photo):
    """SDXL: with the source prompt as the unconditional input (tokens and pooled embedding), guided sampling equals
    the source's conditional prediction, i.e. sampling without guidance, exactly."""
    pipe = random_pipeline("tiny-sdxl", torch_dtype=torch.float64)
    inv = invert(pipe, photo, "a red circle", "negative-prompt", STEPS, 7.5)
    assert set(inv.uncond_added) == {"text_embeds"}
    guided = reconstruct(pipe, inv)
    cond = encode_prompts(pipe, ["a red circle"], "", False, "cpu", (SIZE, SIZE))
    unguided = sample(pipe.unet, ddim_scheduler(pipe.scheduler.config), inv.noise.double(), cond, STEPS, 1.0)
    assert (guided - unguided.float()).abs().max().item() <= 1e-5


