"""The shipped shapes fixture: it loads offline through the ordinary Stable Diffusion path, has SD1.x's
attention layout, stays small, and generates what it is asked for."""

from pathlib import Path

import numpy as np
import pytest

from freeprompt.attention import discover_layers
from freeprompt.models.loading import fixture_path, load_pipeline
from support.fixture_checks import prompted_colour_hits, stored_parts

FIXTURE = fixture_path("shapes")


@pytest.fixture(scope="module")
def shapes_pipe():
    return load_pipeline("shapes", device="cpu").pipe


def test_fixture_is_fp16_safetensors_under_25_mb():
    parts, size = stored_parts(FIXTURE)
    assert parts == {"unet", "vae", "text_encoder"} and size <= 25 * 2**20


def test_fixture_loads_offline_with_sd1_layout(shapes_pipe):
    registry = discover_layers(shapes_pipe.unet)
    for kind in ("self", "cross"):
        layers = registry.of_kind(kind)
        assert len(layers) == 16
        assert [layer.place for layer in layers] == ["down"] * 6 + ["mid"] + ["up"] * 9
    assert shapes_pipe.tokenizer("a red circle").input_ids == [49406, 320, 736, 7117, 49407]  # real CLIP BPE ids
    assert (Path(FIXTURE) / "MODEL_CARD.md").exists()


def test_fixture_draws_the_prompted_colour(shapes_pipe):
    """Plain generation, 20 steps, 6 prompts: the oracle finds the prompted colour in most of them."""
    assert prompted_colour_hits(shapes_pipe, guidance=3.0) >= 5


def test_fixture_loads_and_generates_in_plain_diffusers():
    """``StableDiffusionPipeline.from_pretrained(folder)`` with no dtype argument: every component comes up in
    float32 (the weights are stored fp16, the text encoder's config says float32) and the pipeline generates, and
    its image matches freeprompt's own loading path pixel for pixel (same weights, same scheduler, same noise)."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(FIXTURE))
    pipe.set_progress_bar_config(disable=True)
    assert {pipe.unet.dtype, pipe.vae.dtype, pipe.text_encoder.dtype} == {torch.float32}
    from freeprompt.diffusion import latent_shape

    noise = torch.randn(latent_shape(pipe, None, None), generator=torch.Generator().manual_seed(0))
    plain = pipe("a red circle", num_inference_steps=4, guidance_scale=3.0, latents=noise, output_type="np").images
    assert plain.shape == (1, 64, 64, 3) and np.isfinite(plain).all() and plain.std() > 0.01
    ours = load_pipeline("shapes", device="cpu").pipe
    ours.set_progress_bar_config(disable=True)
    again = ours("a red circle", num_inference_steps=4, guidance_scale=3.0, latents=noise, output_type="np").images
    assert np.array_equal(plain, again)
