"""The shipped shapes-mmdit fixture: an SD3-layout MM-DiT that loads offline in plain diffusers with no extra
arguments and through freeprompt, stays small, has no T5 words (its T5 slot is the pipeline's no-T5 zeros), and
draws what it is asked for."""

import json

import numpy as np
import pytest
import torch

from freeprompt.models.loading import fixture_path, load_pipeline
from support.fixture_checks import prompted_colour_hits, stored_parts

FIXTURE = fixture_path("shapes-mmdit")


@pytest.fixture(scope="module")
def mmdit_pipe():
    return load_pipeline("shapes-mmdit", device="cpu").pipe


def test_fixture_is_fp16_safetensors_under_40_mb():
    parts, _ = stored_parts(FIXTURE)
    assert parts == {"transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"}
    assert sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file()) <= 40 * 2**20
    assert (FIXTURE / "MODEL_CARD.md").exists()
    info = json.loads((FIXTURE / "freeprompt_fixture.json").read_text())
    assert info["defaults"]["height"] == info["defaults"]["width"] == 64


def test_fixture_has_sd3_joint_attention_and_clip_words_only(mmdit_pipe):
    from freeprompt.attention import discover_layers
    from freeprompt.diffusion.denoisers import carries_text, denoiser_for
    from freeprompt.models.random_transformers import tiny_sd3

    assert type(mmdit_pipe).__name__ == "StableDiffusion3Pipeline"
    assert len(discover_layers(mmdit_pipe.transformer).of_kind("joint")) == mmdit_pipe.transformer.config.num_layers
    assert not carries_text(mmdit_pipe.text_encoder_3) and carries_text(tiny_sd3().text_encoder_3)
    denoiser = denoiser_for(mmdit_pipe)
    assert [offset for _, offset in denoiser.text_parts()] == [0]  # CLIP's words; the T5 slot names none
    embeddings = denoiser.encode(["a red circle"], "", True, "cpu").embeddings
    assert embeddings.shape[1] == denoiser.text_tokens() == 48
    assert torch.equal(embeddings[:, 24:], torch.zeros_like(embeddings[:, 24:]))


def test_fixture_draws_the_prompted_colour(mmdit_pipe):
    """Plain generation, 20 steps, 6 prompts: the oracle finds the prompted colour in most of them."""
    assert prompted_colour_hits(mmdit_pipe, guidance=4.0) >= 5


def test_fixture_generates_in_plain_diffusers_as_in_freeprompt():
    """``StableDiffusion3Pipeline.from_pretrained(folder)`` with no extra argument: float32 everywhere, and the same
    image as freeprompt's loading path (same weights, same noise)."""
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(str(FIXTURE))
    pipe.set_progress_bar_config(disable=True)
    assert {pipe.transformer.dtype, pipe.vae.dtype, pipe.text_encoder.dtype, pipe.text_encoder_3.dtype} == {
        torch.float32}
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    kwargs = dict(num_inference_steps=4, guidance_scale=4.0, latents=noise, output_type="np", max_sequence_length=24)
    plain = pipe("a red circle", **kwargs).images
    assert plain.shape == (1, 64, 64, 3) and np.isfinite(plain).all() and plain.std() > 0.01
    ours = load_pipeline("shapes-mmdit", device="cpu").pipe
    ours.set_progress_bar_config(disable=True)
    assert np.array_equal(plain, ours("a red circle", **kwargs).images)
