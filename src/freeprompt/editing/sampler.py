"""The DDIM sampling loop. The loop is visible and tells the edit control which step it is on."""

from __future__ import annotations

from typing import Callable

import torch
from diffusers import DDIMScheduler

from ..errors import BadInput

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
    embeddings: torch.Tensor,
    num_steps: int,
    guidance_scale: float,
    on_step: Callable[[int], None] | None = None,
    progress: Callable | None = None,
    embeddings_at: Callable[[int], torch.Tensor] | None = None,
    after_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Denoise ``latents`` (one row per prompt) with DDIM. With ``guidance_scale > 1`` ``embeddings`` holds the
    unconditional rows first, then the conditional rows, and the UNet sees ``[latents, latents]``.

    ``on_step(i)`` is called before the UNet call of step ``i`` (0-based): the one place where a step is
    counted. ``embeddings_at(i)``, when given, supplies the embeddings of step ``i`` (e.g. null-text
    inversion's per-step unconditional embeddings); ``after_step(i, latents)`` may return corrected latents
    after step ``i`` (e.g. inversion trajectories that pin the source branch)."""
    guided = guidance_scale > 1.0
    scheduler.set_timesteps(num_steps, device=latents.device)
    latents = latents * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    for i, t in enumerate(progress(timesteps) if progress else timesteps):
        if on_step is not None:
            on_step(i)
        model_input = torch.cat([latents, latents]) if guided else latents
        model_input = scheduler.scale_model_input(model_input, t)
        context = embeddings if embeddings_at is None else embeddings_at(i)
        noise = unet(model_input, t, encoder_hidden_states=context, return_dict=False)[0]
        if guided:
            uncond, cond = noise.chunk(2)
            noise = uncond + guidance_scale * (cond - uncond)
        latents = scheduler.step(noise, t, latents, return_dict=False)[0]
        if after_step is not None:
            latents = after_step(i, latents)
    return latents


@torch.no_grad()
def decode(pipe, latents: torch.Tensor) -> list:
    """Latents to PIL images through the pipeline's VAE and image processor."""
    vae = pipe.vae
    images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(images, output_type="pil", do_denormalize=[True] * len(images))
