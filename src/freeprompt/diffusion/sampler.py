"""The DDIM sampling loop: the one place where a denoising step is counted.

The loop is visible and plain (in the spirit of k-diffusion's samplers): state lives in its arguments, and
whatever needs to act around a step (an edit control, an attention recorder, an inversion that pins the
source branch) is a ``StepHooks`` object the loop calls, with the step index, at fixed points.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch
from diffusers.schedulers.scheduling_ddim import DDIMScheduler

from ..errors import BadInput
from .denoisers import Denoiser, network_denoiser
from .hooks import StepHooks
from .prompts import Conditioning, as_conditioning

# The official FPE code's scheduler: SD's training betas, no clipping, final alpha from the schedule.
OFFICIAL_DDIM = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)


def ddim_scheduler(pipe_scheduler_config=None, model_betas: bool = False) -> DDIMScheduler:
    """DDIM with the official settings, keeping the model's prediction type and training length (and, with
    ``model_betas``, its own noise schedule: a model trained on another one than Stable Diffusion's, PixArt's)."""
    if pipe_scheduler_config is None:
        return DDIMScheduler(**OFFICIAL_DDIM)
    kept = ("beta_start", "beta_end", "beta_schedule") if model_betas else ()
    official = {key: value for key, value in OFFICIAL_DDIM.items() if key not in kept}
    return DDIMScheduler.from_config(pipe_scheduler_config, **official)


def check_steps(steps: int, scheduler_config=None) -> int:
    """Denoising steps a DDIM schedule can take: 1 up to the model's training steps."""
    train = (scheduler_config or {}).get("num_train_timesteps", 1000)
    if not 1 <= steps <= train:
        raise BadInput(f"steps must be between 1 and {train} (the model's training steps), got {steps}",
                       "use e.g. --steps 50")
    return steps


def check_guidance(guidance: float) -> float:
    """Classifier-free guidance a run can use: a finite number, 0 or more (1 or less: no guidance)."""
    try:
        value = float(guidance)
    except (TypeError, ValueError):
        raise BadInput(f"guidance {guidance!r} is not a number", "use e.g. --guidance 7.5") from None
    if not math.isfinite(value) or value < 0 or value > 1000:
        raise BadInput(f"guidance {guidance} is not a number between 0 and 1000", "use e.g. --guidance 7.5")
    return value


def initial_latents(seed: int, shape: tuple[int, ...], device, dtype, generator=None) -> torch.Tensor:
    """Seeded noise, drawn on the CPU so that a seed means the same noise on every device (from ``generator`` when
    given, which then goes on to the step noise of a stochastic sampler, as in diffusers pipelines)."""
    generator = generator if generator is not None else torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


class SharedNoise:
    """The step noise of a stochastic sampler (Euler ancestral, LCM, TCD, SDE solvers), one draw per step shared by
    every row of the batch: each row gets a generator in the same state, and the shared generator moves on as one
    row's draw moved it. With one row this is exactly a diffusers pipeline given ``generator``."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    @classmethod
    def seeded(cls, seed: int) -> SharedNoise:
        return cls(torch.Generator("cpu").manual_seed(int(seed)))

    def step_generators(self, rows: int) -> list[torch.Generator]:
        state = self.generator.get_state()
        generators = [torch.Generator("cpu") for _ in range(rows)]
        for generator in generators:
            generator.set_state(state)
        return generators

    def advance(self, generators: list[torch.Generator]) -> None:
        self.generator.set_state(generators[0].get_state())


def step_bar(progress: bool | Callable, total: int, desc: str) -> Callable | None:
    """A step loop's progress wrapper: ``progress`` itself if callable, a tqdm bar if true, else None."""
    if callable(progress):
        return progress
    if not progress:
        return None
    from tqdm.auto import tqdm

    return lambda it: tqdm(it, total=total, desc=desc, unit="step", leave=False)


@torch.no_grad()
def sample(
    unet: Denoiser | torch.nn.Module,
    scheduler,
    latents: torch.Tensor,
    conditioning: Conditioning | torch.Tensor,
    num_steps: int,
    guidance_scale: float,
    hooks: Sequence[StepHooks] = (),
    progress: Callable | None = None,
    noise: SharedNoise | None = None,
) -> torch.Tensor:
    """Denoise ``latents`` (one row per prompt). With ``guidance_scale > 1`` ``conditioning`` (a
    ``Conditioning``, or text embeddings alone) holds the unconditional rows first, then the conditional rows, and
    the UNet sees ``[latents, latents]``, as in diffusers pipelines. ``hooks`` are called in order at every step
    (see ``StepHooks``). ``scheduler`` is any diffusers scheduler; one that draws noise at a step draws it from
    ``noise``, the same for every row (``SharedNoise``; a fresh seed-0 one when not given)."""
    conditioning = as_conditioning(conditioning)
    denoiser = unet if isinstance(unet, Denoiser) else network_denoiser(unet)
    guided = guidance_scale > 1.0 and not denoiser.embedded_guidance
    shared = noise if noise is not None else SharedNoise.seeded(0)
    denoiser.set_timesteps(scheduler, num_steps, latents)
    latents = latents * getattr(scheduler, "init_noise_sigma", 1.0)  # flow matching starts from the noise itself
    timesteps = scheduler.timesteps
    for i, t in enumerate(progress(timesteps) if progress else timesteps):
        context = conditioning
        for hook in hooks:
            hook.begin_step(i)
            context = hook.conditioning(i, context)
        model_input = torch.cat([latents, latents]) if guided else latents
        if hasattr(scheduler, "scale_model_input"):  # flow matching has none
            model_input = scheduler.scale_model_input(model_input, t)
        prediction = denoiser.predict(model_input, t, context, guidance_scale)
        if guided:
            uncond, cond = prediction.chunk(2)
            prediction = uncond + guidance_scale * (cond - uncond)
        latents = _step(scheduler, prediction, t, latents, shared)
        for hook in hooks:
            latents = hook.after_step(i, latents)
    for hook in hooks:
        hook.end_run()
    return latents


def _step(scheduler, model_output: torch.Tensor, t, latents: torch.Tensor, noise: SharedNoise) -> torch.Tensor:
    """One scheduler step; a scheduler that takes a generator gets one per row, all in the same state."""
    if "generator" not in inspect.signature(scheduler.step).parameters:
        return scheduler.step(model_output, t, latents, return_dict=False)[0]
    generators = noise.step_generators(latents.shape[0])
    out = scheduler.step(model_output, t, latents, generator=generators, return_dict=False)[0]
    noise.advance(generators)
    return out


@torch.no_grad()
def decode(pipe, latents: torch.Tensor) -> list:
    """Latents to PIL images through the pipeline's VAE and image processor (an fp16 VAE whose config asks for it,
    SDXL's, decodes in float32, as diffusers does)."""
    vae = pipe.vae
    with vae_precision(vae):
        shift = getattr(vae.config, "shift_factor", None) or 0.0  # SD3's and FLUX's VAE
        images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor + shift, return_dict=False)[0]
    return pipe.image_processor.postprocess(images.float(), output_type="pil", do_denormalize=[True] * len(images))


@contextmanager
def vae_precision(vae):
    """Inside the block the VAE runs in float32 if it is fp16 and its config says ``force_upcast`` (SDXL's VAE
    overflows in fp16); its dtype comes back on exit."""
    dtype = vae.dtype
    upcast = dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        yield vae
    finally:
        if upcast:
            vae.to(dtype)
