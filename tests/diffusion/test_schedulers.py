"""Any diffusers scheduler on the one loop: each one's plain run equals diffusers' own StableDiffusionPipeline with that
scheduler from the same noise (and, for the ones that draw noise every step, the same generator); the step noise
of a stochastic sampler is shared by every row, so a source and its targets walk one path; a photo's edit takes
only a scheduler that inverts."""

import pytest
import torch
from diffusers import StableDiffusionPipeline

from freeprompt.diffusion import encode_prompts, initial_latents, sample
from freeprompt.diffusion.sampler import SharedNoise
from freeprompt.diffusion.schedulers import FLOW, SCHEDULERS, check_scheduler, make_scheduler
from freeprompt.editing.generated import edit
from freeprompt.editing.methods import build_method
from freeprompt.errors import BadInput

SHAPE = (1, 4, 8, 8)


@pytest.mark.parametrize("name", [s for s in SCHEDULERS if s not in FLOW])  # flow: test_transformer_families.py
@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_each_scheduler_equals_the_diffusers_pipeline(tiny_pipe, name, guidance):
    prompts = ["a red car"]
    noise = initial_latents(3, SHAPE, "cpu", torch.float32)
    emb = encode_prompts(tiny_pipe, prompts, "", guidance > 1, "cpu")
    ours = sample(tiny_pipe.unet, make_scheduler(name, tiny_pipe.scheduler.config), noise.clone(), emb, 4, guidance,
                  noise=SharedNoise.seeded(11))
    theirs_pipe = StableDiffusionPipeline(**{**tiny_pipe.components,
                                             "scheduler": make_scheduler(name, tiny_pipe.scheduler.config)},
                                          requires_safety_checker=False)
    theirs_pipe.set_progress_bar_config(disable=True)
    eta = 0.3 if name == "tcd" else 0.0  # the pipeline passes its eta (0) to a step that takes one: TCD's gamma 0.3
    theirs = theirs_pipe(prompts, num_inference_steps=4, guidance_scale=guidance, height=64, width=64, latents=noise,
                         generator=torch.Generator().manual_seed(11), eta=eta, output_type="latent").images
    assert (ours - theirs).abs().max().item() <= 1e-5, name
    assert (ours - noise).abs().max().item() > 1e-2  # it sampled


@pytest.mark.parametrize("name", ["euler-a", "lcm", "tcd"])
def test_a_stochastic_sampler_draws_one_noise_per_step_for_every_row(tiny_pipe, name):
    same = edit(tiny_pipe, "a red car", ["a red car"], method=build_method("plain"), seed=4, steps=3, height=64,
                width=64, scheduler=name, progress=False, decode=False)
    assert torch.equal(same.latents[0], same.latents[1])  # identical prompts, identical paths
    other = edit(tiny_pipe, "a red car", ["a red car"], method=build_method("plain"), seed=5, steps=3, height=64,
                 width=64, scheduler=name, progress=False, decode=False)
    assert (other.latents[0] - same.latents[0]).abs().max().item() > 1e-3  # another seed, another path
    assert same.params["scheduler_name"] == name


@pytest.mark.parametrize("method", ["fpe", "p2p", "masactrl", "pnp"])
def test_every_method_edits_with_every_kind_of_sampler(tiny_pipe, method):
    for name in ("dpm++2m", "euler-a"):
        result = edit(tiny_pipe, "a red car", ["a blue car"], method=build_method(method), seed=1, steps=3, height=64,
                      width=64, scheduler=name, progress=False, decode=False)
        plain = edit(tiny_pipe, "a red car", ["a blue car"], method=build_method("plain"), seed=1, steps=3,
                     height=64, width=64, scheduler=name, progress=False, decode=False)
        assert (result.latents[0] - plain.latents[0]).abs().max().item() <= 1e-3  # the source is not edited
        assert (result.latents[1] - plain.latents[1]).abs().max().item() > 1e-5  # the target is


def test_scheduler_names_and_photos(tiny_pipe):
    assert check_scheduler("Euler-A") == "euler-a"
    with pytest.raises(BadInput, match="unknown scheduler 'heun'") as err:
        check_scheduler("heun")
    assert "\n" not in str(err.value) and "ddim" in err.value.fix
    with pytest.raises(BadInput, match="cannot be inverted with the euler scheduler"):
        check_scheduler("euler", inverting=True)
    from PIL import Image

    from freeprompt.editing.real import edit_real

    with pytest.raises(BadInput, match="cannot be inverted"):
        edit_real(tiny_pipe, Image.new("RGB", (64, 64), "red"), "", ["a blue car"], steps=2, progress=False,
                  scheduler="unipc")
