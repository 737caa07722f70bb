"""The DDIM sampling loop: the one place where a denoising step is counted.

The loop is visible and plain (in the spirit of k-diffusion's samplers): state lives in its arguments, and
whatever needs to act around a step (an edit control, an attention recorder, an inversion that pins the
source branch) is a ``StepHooks`` object the loop calls, with the step index, at fixed points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch
from diffusers.schedulers.scheduling_ddim import DDIMScheduler

from ..errors import BadInput
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


def ddim_scheduler(pipe_scheduler_config=None) -> DDIMScheduler:
    """DDIM with the official settings, keeping the model's prediction type and training length."""
    if pipe_scheduler_config is None:
        return DDIMScheduler(**OFFICIAL_DDIM)
    return DDIMScheduler.from_config(pipe_scheduler_config, **OFFICIAL_DDIM)


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


def initial_latents(seed: int, shape: tuple[int, ...], device, dtype) -> torch.Tensor:
    """Seeded noise, drawn on the CPU so that a seed means the same noise on every device."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


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
    unet,
    scheduler,
    latents: torch.Tensor,
    conditioning: Conditioning | torch.Tensor,
    num_steps: int,
    guidance_scale: float,
    hooks: Sequence[StepHooks] = (),
    progress: Callable | None = None,
) -> torch.Tensor:
    """Denoise ``latents`` (one row per prompt) with DDIM. With ``guidance_scale > 1`` ``conditioning`` (a
    ``Conditioning``, or text embeddings alone) holds the unconditional rows first, then the conditional rows, and
    the UNet sees ``[latents, latents]``, as in diffusers pipelines. ``hooks`` are called in order at every step
    (see ``StepHooks``)."""
    conditioning = as_conditioning(conditioning)
    guided = guidance_scale > 1.0
    scheduler.set_timesteps(num_steps, device=latents.device)
    latents = latents * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    for i, t in enumerate(progress(timesteps) if progress else timesteps):
        context = conditioning
        for hook in hooks:
            hook.begin_step(i)
            context = hook.conditioning(i, context)
        model_input = torch.cat([latents, latents]) if guided else latents
        model_input = scheduler.scale_model_input(model_input, t)
        noise = unet(model_input, t, **context.unet_kwargs(), return_dict=False)[0]
        if guided:
            uncond, cond = noise.chunk(2)
            noise = uncond + guidance_scale * (cond - uncond)
        latents = scheduler.step(noise, t, latents, return_dict=False)[0]
        for hook in hooks:
            latents = hook.after_step(i, latents)
    for hook in hooks:
        hook.end_run()
    return latents


@torch.no_grad()
def decode(pipe, latents: torch.Tensor) -> list:
    """Latents to PIL images through the pipeline's VAE and image processor (an fp16 VAE whose config asks for it,
    SDXL's, decodes in float32, as diffusers does)."""
    vae = pipe.vae
    with vae_precision(vae):
        images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
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
