"""Stable Diffusion 2.x (v-prediction) and SDXL (two text encoders, pooled embeddings, size conditioning) on tiny
random configs, the diffusion floor: freeprompt's prompt encoding and sampling loop equal the model's own diffusers
pipeline."""

import pytest

from freeprompt.diffusion import ddim_scheduler
from freeprompt.editing.generated import edit
from freeprompt.models.random import random_pipeline

SIZE, STEPS = 64, 4


@pytest.fixture(scope="module", params=["tiny-sd2", "tiny-sdxl"])
def pipe(request):
    return random_pipeline(request.param, seed=0)


def test_our_loop_matches_the_diffusers_pipeline(pipe):
    """No edit: freeprompt's loop (prompt encoding, SDXL's size ids, v-prediction) equals the model's own
    pipeline on the same noise and scheduler."""
    res = edit(pipe, "a red car", ["a blue car"], seed=2, steps=STEPS, height=SIZE, width=SIZE, self_replace="0:0",
               progress=False)
    pipe.scheduler = ddim_scheduler(pipe.scheduler.config)
    out = pipe(["a red car", "a blue car"], num_inference_steps=STEPS, guidance_scale=7.5, height=SIZE, width=SIZE,
               latents=res.initial_latents.expand(2, -1, -1, -1), output_type="latent").images
    assert (out - res.latents).abs().max().item() <= 1e-4
