"""Stable Diffusion 2.x (v-prediction, linear projections, a head count per block) and SDXL (two text encoders,
pooled embeddings, size conditioning, transformer depth > 1) on tiny random configs: layers, FPE against the
map-materialising reference, every method, real-image inversions, loading, and the block-level layer spec."""

import json

import pytest
import torch
from PIL import Image
from reference import reference_processors

from freeprompt.attention import StepRange, discover_layers
from freeprompt.diffusion import StepCallback, ddim_scheduler, encode_prompts, initial_latents, latent_shape, sample
from freeprompt.editing.generated import edit
from freeprompt.editing.inversion import invert, reconstruct
from freeprompt.editing.methods import P2P, MasaCtrl, PnP, method_named
from freeprompt.editing.real import edit_real
from freeprompt.errors import ModelLoadError
from freeprompt.models.loading import load_pipeline
from freeprompt.models.random import random_pipeline
from freeprompt.shapes import world

SIZE, STEPS = 64, 4
PROMPTS = ["a red car", "a blue car", "a photo of a green truck"]


@pytest.fixture(scope="module", params=["tiny-sd2", "tiny-sdxl"])
def pipe64(request):
    return random_pipeline(request.param, seed=0, torch_dtype=torch.float64)


@pytest.fixture(scope="module", params=["tiny-sd2", "tiny-sdxl"])
def pipe(request):
    return random_pipeline(request.param, seed=0)


def test_sdxl_layers_in_forward_order_with_blocks():
    pipe = random_pipeline("tiny-sdxl")
    reg = discover_layers(pipe.unet)
    layers = reg.of_kind("self")
    # tiny SDXL: down.1 (2 attentions x depth 1), down.2 (2 x 1), mid (depth 2), up.0 (3 x 2), up.1 (3 x 1)
    assert len(layers) == 17 and [layer.index for layer in layers] == list(range(1, 18))
    assert [(layer.place, layer.block) for layer in layers][:4] == [("down", 1)] * 2 + [("down", 2)] * 2
    calls = []
    hooks = [pipe.unet.get_submodule(layer.name).register_forward_hook(
        lambda mod, args, out, name=layer.name: calls.append(name)) for layer in reg]
    cond = encode_prompts(pipe, ["a cat"], "", False, "cpu", (64, 64))
    try:
        with torch.no_grad():
            pipe.unet(torch.zeros(1, 4, 8, 8), 10, **cond.unet_kwargs())
    finally:
        for h in hooks:
            h.remove()
    assert calls == [layer.name for layer in reg]  # the registry's order is the order attention runs
    picked = [(layer.place, layer.block) for layer in reg.select("down.2,mid", "self", (8, 8))]
    assert picked == [("down", 2)] * 4 + [("mid", 0)] * 2
    sd1 = discover_layers(random_pipeline("tiny").unet)
    assert [layer.index for layer in sd1.select("up.3", "self", (8, 8))] == [14, 15, 16]
    assert [layer.index for layer in sd1.select("mid,up", "self", (8, 8))] == list(range(7, 17))


@pytest.mark.parametrize("layers,steps", [("all", "0:1"), ("<=2x2", "0.25:0.75")])
def test_fpe_equals_materialising_reference(pipe64, layers, steps):
    shape = latent_shape(pipe64, SIZE, SIZE)
    ours = edit(pipe64, PROMPTS[0], PROMPTS[1:], seed=3, steps=STEPS, height=SIZE, width=SIZE, layers=layers,
                self_replace=steps, progress=False).latents
    registry = discover_layers(pipe64.unet)
    names = {layer.name for layer in registry.select(layers, "self", shape[2:])}
    noise = initial_latents(3, shape, "cpu", pipe64.unet.dtype).expand(3, -1, -1, -1).clone()
    cond = encode_prompts(pipe64, PROMPTS, "", True, "cpu", (SIZE, SIZE))
    rng, state = StepRange.parse(steps), {"edit": False}

    def on_step(i):
        state["edit"] = rng.contains(i, STEPS)

    with reference_processors(pipe64.unet, registry, names, 3, False, state):
        ref = sample(pipe64.unet, ddim_scheduler(pipe64.scheduler.config), noise, cond, STEPS, 7.5,
                     hooks=[StepCallback(on_step)])
    assert (ours - ref).abs().max().item() <= 1e-5
    plain = edit(pipe64, PROMPTS[0], PROMPTS[1:], seed=3, steps=STEPS, height=SIZE, width=SIZE, self_replace="0:0",
                 progress=False).latents
    assert (plain[1:] - ours[1:]).abs().max().item() > 1e-3


def test_our_loop_matches_the_diffusers_pipeline(pipe):
    """No edit: freeprompt's loop (prompt encoding, SDXL's size ids, v-prediction) equals the model's own
    pipeline on the same noise and scheduler."""
    res = edit(pipe, "a red car", ["a blue car"], seed=2, steps=STEPS, height=SIZE, width=SIZE, self_replace="0:0",
               progress=False)
    pipe.scheduler = ddim_scheduler(pipe.scheduler.config)
    out = pipe(["a red car", "a blue car"], num_inference_steps=STEPS, guidance_scale=7.5, height=SIZE, width=SIZE,
               latents=res.initial_latents.expand(2, -1, -1, -1), output_type="latent").images
    assert (out - res.latents).abs().max().item() <= 1e-4


@pytest.mark.parametrize("method", [P2P(), P2P(mode="refine", blend=("car", "truck")), MasaCtrl(), PnP(),
                                    method_named("fpe+p2p"), MasaCtrl(mask_words=("car", "truck"))])
def test_every_method_runs(pipe, method):
    prompts = ["a red car", "a blue truck"]
    if method.name == "p2p" and method.mode == "replace":
        prompts = ["a red car", "a blue car"]
    out = edit(pipe, prompts[0], prompts[1:], method=method, seed=1, steps=STEPS, height=SIZE, width=SIZE,
               progress=False)
    plain = edit(pipe, prompts[0], prompts[1:], method=method_named("plain"), seed=1, steps=STEPS, height=SIZE,
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
    assert inv.uncond_pooled is not None
    guided = reconstruct(pipe, inv)
    cond = encode_prompts(pipe, ["a red circle"], "", False, "cpu", (SIZE, SIZE))
    unguided = sample(pipe.unet, ddim_scheduler(pipe.scheduler.config), inv.noise.double(), cond, STEPS, 1.0)
    assert (guided - unguided.float()).abs().max().item() <= 1e-5


def test_loading_picks_the_pipeline_class_and_refuses_other_models(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    folder = tmp_path / "xl"
    random_pipeline("tiny-sdxl").save_pretrained(folder, safe_serialization=True)
    loaded = load_pipeline(str(folder), device="cpu")
    assert isinstance(loaded.pipe, StableDiffusionXLPipeline)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionXLInpaintPipeline"}))
    with pytest.raises(ModelLoadError, match="extra input channels"):
        load_pipeline(str(folder), device="cpu")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline", "transformer": ["x", "y"]}))
    with pytest.raises(ModelLoadError, match="no UNet") as err:
        load_pipeline(str(folder), device="cpu")
    assert "Stable Diffusion 1.x, 2.x and XL" in err.value.fix
