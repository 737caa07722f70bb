"""Photos on flow-matching models (SD3, FLUX.1; issue #38): the Euler and the midpoint (RF-Solver's second order)
inversion equal a reference written here from the flow ODE and diffusers' own scheduler and transformer call; unpinned
Euler sampling from the inverted noise comes back to the image's latent, closer with more steps and closer after the
second-order inversion; edit_real pins the source branch to the image, caches the inversion (the solver in its key)
and records the solver; what is not defined on a flow model is one line. Tiny random pipelines in float64."""

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from PIL import Image

from freeprompt.editing.cache import InversionCache
from freeprompt.editing.flow_inversion import flow_invert
from freeprompt.editing.images import image_to_latents
from freeprompt.editing.inversion import invert
from freeprompt.editing.real import edit_real
from freeprompt.errors import BadInput
from freeprompt.models.random import random_pipeline
from freeprompt.models.random_transformers import random_transformer_pipeline


@pytest.fixture(scope="module", params=["tiny-sd3", "tiny-flux"])
def flow_pipe(request):
    return random_transformer_pipeline(request.param, torch_dtype=torch.float64)


@pytest.fixture(scope="module")
def sd3():
    return random_transformer_pipeline("tiny-sd3", torch_dtype=torch.float64)


def photo(seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def reference_trajectory(pipe, x0, prompt, steps, solver):
    """The flow ODE dx/dσ = v integrated upwards over the σs diffusers' scheduler samples with (SD3: no dynamic
    shift), the velocity from SD3's transformer called as its pipeline calls it."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas.double()
    length = min(256, pipe.tokenizer_3.model_max_length)  # the pipeline's default, as far as the tiny T5 reaches
    embeds, _, pooled, _ = pipe.encode_prompt(prompt=[prompt], prompt_2=None, prompt_3=None,
                                              do_classifier_free_guidance=False, max_sequence_length=length)

    def v(x, sigma):
        t = (sigma * 1000).reshape(1)
        return pipe.transformer(hidden_states=x, timestep=t, encoder_hidden_states=embeds, pooled_projections=pooled,
                                return_dict=False)[0]

    x, out = x0.double(), [x0.double()[0]]
    with torch.no_grad():
        for i in reversed(range(steps)):
            low, high = sigmas[i + 1], sigmas[i]
            k = v(x, low)
            if solver == "midpoint":
                k = v(x + (high - low) / 2 * k, (low + high) / 2)
            x = x + (high - low) * k
            out.append(x[0])
    return torch.stack(out)


@pytest.mark.parametrize("solver", ["euler", "midpoint"])
def test_the_inversion_equals_the_flow_ode_written_out(sd3, solver):
    x0 = image_to_latents(sd3, photo())
    ours = flow_invert(sd3, x0, "a red car", 4, solver=solver)
    want = reference_trajectory(sd3, x0, "a red car", 4, solver)
    assert ours.shape == (5, *x0.shape[1:])
    assert (ours - want).abs().max().item() < 1e-5  # the trajectory is kept in float32
    assert (ours[0] - x0[0]).abs().max().item() == 0.0


def test_sampling_back_from_the_inverted_noise_converges_to_the_image(flow_pipe):
    image = photo(1)
    rmse = {(solver, steps): invert(flow_pipe, image, "a cat", "direct", steps, 1.0, measure=True,
                                    solver=solver).info["ddim_latent_rmse"]
            for solver in ("euler", "midpoint") for steps in (4, 16)}
    for solver in ("euler", "midpoint"):
        assert rmse[solver, 16] < 0.5 * rmse[solver, 4], rmse  # a consistent inversion: the error shrinks with Δσ
    assert rmse["midpoint", 4] < rmse["euler", 4] and rmse["midpoint", 16] < rmse["euler", 16], rmse


def test_edit_real_pins_the_source_and_caches_the_inversion(flow_pipe, tmp_path):
    image, cache = photo(2), InversionCache(tmp_path)
    args = dict(steps=4, guidance=2.0, cache=cache, model_key="tiny@0", progress=False)
    first = edit_real(flow_pipe, image, "a red car", ["a blue car"], solver="midpoint", **args)
    assert first.params["inversion_solver"] == "midpoint" and not first.params["inversion_cached"]
    assert first.params["scheduler_name"] == "flow" and first.params["reconstruction_latent_rmse"] < 1e-10
    assert (first.latents[1] - first.latents[0]).abs().max().item() > 1e-3  # the target is its own image
    again = edit_real(flow_pipe, image, "a red car", ["a blue car"], solver="midpoint", **args)
    assert again.params["inversion_cached"] and torch.equal(again.latents, first.latents)
    euler = edit_real(flow_pipe, image, "a red car", ["a blue car"], **args)  # another solver: another entry
    assert not euler.params["inversion_cached"] and euler.params["inversion_solver"] == "euler"


@pytest.mark.parametrize("how, message", [
    (dict(inversion="null-text"), "the null-text inversion edits a noise-prediction model's unconditional branch"),
    (dict(inversion="negative-prompt"), "it is not defined on a flow-matching"),
    (dict(solver="rk4"), "unknown inversion solver 'rk4'"),
    (dict(scheduler="ddim"), "the ddim scheduler cannot sample a flow-matching model"),
])
def test_what_a_flow_model_does_not_invert_is_one_line(sd3, how, message):
    with pytest.raises(BadInput) as refused:
        edit_real(sd3, photo(), "a red car", ["a blue car"], steps=2, progress=False, **how)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_the_midpoint_solver_is_refused_on_a_noise_prediction_model():
    for pipe in (random_pipeline("tiny", seed=0), random_transformer_pipeline("tiny-pixart")):
        with pytest.raises(BadInput, match="the midpoint solver inverts flow-matching models"):
            edit_real(pipe, photo(), "a red car", ["a blue car"], steps=2, progress=False, solver="midpoint")


def test_pixart_inverts_with_ddim_over_its_own_betas():
    """PixArt (epsilon prediction, its own betas): each inverted step is DDIM's step run backwards with the noise
    PixArt's transformer predicts at the known latent (called here as its pipeline calls it, the learned variance
    dropped), and an edit pins the source to the photo."""
    from diffusers import DDIMScheduler

    pipe = random_transformer_pipeline("tiny-pixart", torch_dtype=torch.float64)
    x0 = image_to_latents(pipe, photo(3)).double()
    ours = invert(pipe, photo(3), "a red car", "direct", 3, 1.0).trajectory.double()
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False, set_alpha_to_one=False,
                                          steps_offset=1)
    scheduler.set_timesteps(3)
    embeds, mask, _, _ = pipe.encode_prompt(["a red car"], do_classifier_free_guidance=False, clean_caption=False,
                                            max_sequence_length=min(300, pipe.tokenizer.model_max_length))
    x, ratio = x0, scheduler.config.num_train_timesteps // 3
    for k, t in enumerate(reversed(scheduler.timesteps.tolist())):
        with torch.no_grad():
            eps = pipe.transformer(x, encoder_hidden_states=embeds, encoder_attention_mask=mask,
                                   timestep=torch.tensor([t]), added_cond_kwargs={"resolution": None,
                                                                                 "aspect_ratio": None},
                                   return_dict=False)[0][:, :4]
        alpha_t = scheduler.alphas_cumprod[t]
        alpha_prev = scheduler.alphas_cumprod[t - ratio] if t - ratio >= 0 else scheduler.final_alpha_cumprod
        clean = (x - (1 - alpha_prev) ** 0.5 * eps) / alpha_prev ** 0.5
        x = alpha_t ** 0.5 * clean + (1 - alpha_t) ** 0.5 * eps
        assert (ours[k + 1] - x[0]).abs().max().item() < 1e-5, k  # the trajectory is kept in float32
    result = edit_real(pipe, photo(3), "a red car", ["a blue car"], steps=3, guidance=2.0, progress=False)
    assert result.params["reconstruction_latent_rmse"] < 1e-10 and result.params["scheduler_name"] == "ddim"


def test_pixart_negative_prompt_inversion_carries_the_text_mask():
    """Negative-prompt inversion on PixArt: the unconditional rows take the source prompt's embeddings *and* its
    text mask, so the guided prediction of the source is its conditional one and guided sampling from the inverted
    noise equals unguided sampling (float64, to 1e-9). With the empty prompt's mask left in place it would not."""
    from freeprompt.diffusion import ddim_scheduler, sample
    from freeprompt.diffusion.denoisers import denoiser_for
    from freeprompt.editing.inversion import reconstruct

    pipe = random_transformer_pipeline("tiny-pixart", torch_dtype=torch.float64)
    inv = invert(pipe, photo(3), "a red car", "negative-prompt", 3, 4.0)
    assert set(inv.uncond_added) == {"encoder_attention_mask"} and inv.uncond_added["encoder_attention_mask"].sum() > 1
    denoiser = denoiser_for(pipe)
    cond = denoiser.encode(["a red car"], "", False, "cpu")
    unguided = sample(denoiser, ddim_scheduler(pipe.scheduler.config, model_betas=True), inv.noise.double(), cond, 3,
                      1.0)
    assert (reconstruct(pipe, inv) - unguided.float()).abs().max().item() <= 1e-6
    masked = invert(pipe, photo(3), "a red car", "negative-prompt", 3, 4.0)
    masked.uncond_added = None  # the batch's own (empty prompt's) mask under the source's embeddings
    assert (reconstruct(pipe, masked) - unguided.float()).abs().max().item() > 1e-4


def test_pixart_null_text_inversion_optimises_towards_the_trajectory(tmp_path):
    """Null-text inversion on PixArt: every step's Adam updates lower the distance of the guided step to the
    trajectory, the optimised embeddings reconstruct the photo's latent closer than plain guided DDIM does, they
    apply to every row (an identity edit repeats the source), and they come back from the cache with the mask."""
    from freeprompt.editing.inversion import reconstruct

    pipe = random_transformer_pipeline("tiny-pixart", torch_dtype=torch.float64)
    inv = invert(pipe, photo(3), "a red car", "null-text", 3, 4.0)
    first, final = inv.info["first_losses"], inv.info["final_losses"]
    assert all(b < a for a, b in zip(first, final, strict=True)), (first, final)
    plain = invert(pipe, photo(3), "a red car", "ddim", 3, 4.0)
    error = (reconstruct(pipe, inv)[0] - inv.trajectory[0]).pow(2).mean().sqrt().item()
    plain_error = (reconstruct(pipe, plain, pinned=False)[0] - plain.trajectory[0]).pow(2).mean().sqrt().item()
    assert error < plain_error, (error, plain_error)
    cache = InversionCache(tmp_path)
    kwargs = dict(inversion="null-text", steps=3, guidance=4.0, progress=False, cache=cache, model_key="pixart@1")
    fresh = edit_real(pipe, photo(3), "a red car", ["a red car"], **kwargs)
    loaded = edit_real(pipe, photo(3), "a red car", ["a red car"], **kwargs)
    assert loaded.params["inversion_cached"] and torch.equal(fresh.latents, loaded.latents)
    assert torch.equal(fresh.latents[0], fresh.latents[1])
