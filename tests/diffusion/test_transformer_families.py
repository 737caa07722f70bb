"""The one sampling loop drives diffusion transformers as their own diffusers pipelines do: SD3 (flow matching with
classifier-free guidance), FLUX.1 (dynamic-shift flow matching, the guidance embedding, 2x2-packed latents) and
PixArt-Sigma (DPM-Solver++, a learned variance dropped): plain generation equals the pipeline's output from the same
noise (SD3 and FLUX on freeprompt's ``flow`` scheduler, made from the model's config), bitwise in float64, on tiny
random configs of each family (no download; the T5 tokenizer is the CLIP tokenizer standing in)."""

import copy

import pytest
import torch

from freeprompt.diffusion import decode, latent_shape, sample
from freeprompt.diffusion.denoisers import denoiser_for
from freeprompt.diffusion.sampler import SharedNoise
from freeprompt.diffusion.schedulers import make_scheduler
from freeprompt.models.random_transformers import random_transformer_pipeline


@pytest.fixture(scope="module", params=["tiny-sd3", "tiny-flux", "tiny-pixart"])
def family(request):
    return request.param, random_transformer_pipeline(request.param, torch_dtype=torch.float64)


def pipeline_latents(pipe, name, noise, guidance):
    """The diffusers pipeline's own run from ``noise`` (FLUX's latents packed in and out as its pipeline does)."""
    c = noise.shape[1]
    kwargs = {"max_sequence_length": 32}
    if name == "tiny-pixart":
        kwargs.update(clean_caption=False, use_resolution_binning=False)
    latents = noise.view(1, c, 4, 2, 4, 2).permute(0, 2, 4, 1, 3, 5).reshape(1, 16, c * 4) if name == "tiny-flux" \
        else noise
    out = pipe("a red car", num_inference_steps=3, height=64, width=64, guidance_scale=guidance, latents=latents,
               output_type="latent", generator=torch.Generator().manual_seed(0), **kwargs).images
    return out.view(1, 4, 4, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(1, c, 8, 8) if name == "tiny-flux" else out


@pytest.mark.parametrize("guidance", [3.5, 1.0])
def test_plain_generation_equals_the_diffusers_pipeline(family, guidance):
    name, pipe = family
    denoiser = denoiser_for(pipe)
    shape = latent_shape(pipe, 64, 64)
    assert shape == (1, 4 if name == "tiny-pixart" else 16, 8, 8)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    guided = guidance > 1 and not denoiser.embedded_guidance
    conditioning = denoiser.encode(["a red car"], "", guided, "cpu")
    config = pipe.scheduler.config
    scheduler = copy.deepcopy(pipe.scheduler) if name == "tiny-pixart" else make_scheduler("flow", config)
    ours = sample(denoiser, scheduler, noise.clone(), conditioning, 3, guidance, noise=SharedNoise.seeded(0))
    theirs = pipeline_latents(pipe, name, noise, guidance)
    assert torch.equal(ours, theirs)
    assert (ours - noise).abs().max().item() > 1e-2  # it sampled
    assert decode(pipe, ours[:1].float().to(pipe.vae.dtype))[0].size == (64, 64)


def test_each_family_is_named_and_guided_as_its_pipeline():
    kinds = {name: denoiser_for(random_transformer_pipeline(name)) for name in ("tiny-sd3", "tiny-flux", "tiny-pixart")}
    assert [d.family for d in kinds.values()] == ["sd3", "flux", "pixart"]
    assert kinds["tiny-flux"].embedded_guidance and not kinds["tiny-sd3"].embedded_guidance
    assert [d.patch for d in kinds.values()] == [2, 2, 2]
