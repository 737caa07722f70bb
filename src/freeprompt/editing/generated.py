"""Free-Prompt-Editing of generated images: one seed, a source prompt and N target prompts in one batch."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..attention import BatchLayout, EditControl, FPEPolicy, StepRange, discover_layers, free_prompt_editing
from ..errors import BadInput
from .prompts import check_prompt, encode_prompts
from .sampler import check_steps, ddim_scheduler, initial_latents, sample, step_bar
from .sampler import decode as decode_latents

DEFAULT_LAYERS = "<=32x32"  # the official code's rule: self-attention layers with at most 32x32 tokens
DEFAULT_SELF_REPLACE = "0:0.8"


@dataclass
class EditResult:
    prompts: list[str]  # source first, then the targets
    images: list  # PIL images in the order of ``prompts``
    latents: torch.Tensor  # final latents, one row per prompt
    initial_latents: torch.Tensor  # the noise shared by all prompts
    params: dict
    timings: dict = field(default_factory=dict)

    @property
    def source(self):
        return self.images[0]

    @property
    def targets(self) -> list:
        return self.images[1:]


def latent_shape(pipe, height: int | None, width: int | None) -> tuple[int, int, int, int]:
    factor = pipe.vae_scale_factor
    height = pipe.unet.config.sample_size * factor if height is None else height
    width = pipe.unet.config.sample_size * factor if width is None else width
    multiple = max(8, factor)
    for name, value in (("height", height), ("width", width)):
        if value <= 0 or value % multiple:
            raise BadInput(f"{name} {value} is not a positive multiple of {multiple}",
                           f"use e.g. {max(multiple, round(value / multiple) * multiple)}")
    return (1, pipe.unet.config.in_channels, height // factor, width // factor)


def edit(
    pipe,
    source: str,
    targets: list[str] | str,
    *,
    seed: int = 0,
    latents: torch.Tensor | None = None,
    steps: int = 50,
    guidance: float = 7.5,
    negative_prompt: str = "",
    self_replace: str | tuple[float, float] | StepRange = DEFAULT_SELF_REPLACE,
    layers: str | list[int] = DEFAULT_LAYERS,
    edit_unconditional: bool = False,
    height: int | None = None,
    width: int | None = None,
    progress: bool | Callable = True,
    uncond_at: Callable[[int], torch.Tensor] | None = None,
    after_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    allow_empty_source: bool = False,
    decode: bool = True,
) -> EditResult:
    """Generate ``source`` and every target from the same noise; in the chosen self-attention layers and
    steps each target uses the source's self-attention map (computed as SDPA(Q_src, K_src, V_tgt)).

    For real-image editing: ``latents`` is the inverted noise; ``uncond_at(i)`` gives the unconditional
    embedding (1 x tokens x width) of step ``i`` for every row (null-text / negative-prompt inversion);
    ``after_step(i, latents)`` may correct the latents after step ``i`` (direct inversion).
    ``allow_empty_source`` lets the source prompt be "" (real-image editing inverts with "", as the official
    code does); target prompts must never be empty. ``decode=False`` skips the VAE (``images`` is empty), like
    diffusers' ``output_type="latent"``."""
    timings: dict[str, float] = {}
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets:
        raise BadInput("no target prompt given", "give at least one target prompt")
    empty_ok = allow_empty_source and source == ""
    prompts = [source if empty_ok else check_prompt(pipe.tokenizer, source, "source prompt")]
    prompts += [check_prompt(pipe.tokenizer, t, f"target prompt {i + 1}") for i, t in enumerate(targets)]
    check_steps(steps, pipe.scheduler.config)
    step_range = StepRange.parse(self_replace)
    shape = latent_shape(pipe, height, width)
    registry = discover_layers(pipe.unet)
    chosen = registry.select(layers, "self", shape[2:])
    device, dtype = pipe.unet.device, pipe.unet.dtype

    if latents is None:
        noise = initial_latents(seed, shape, device, dtype)
    else:
        noise = _given_latents(latents, shape).to(device=device, dtype=dtype)
    guided = guidance > 1.0
    layout = BatchLayout.one_source(len(targets), guidance=guided)
    policy = FPEPolicy(layers=frozenset(layer.name for layer in chosen), steps=step_range,
                       edit_unconditional=edit_unconditional)
    control = EditControl(layout, policy, steps)

    start = time.perf_counter()
    embeddings = encode_prompts(pipe, prompts, negative_prompt, guided, device)
    timings["encode_s"] = time.perf_counter() - start

    scheduler = ddim_scheduler(pipe.scheduler.config)
    bar = step_bar(progress, steps, "denoising")
    start = time.perf_counter()
    embeddings_at = None
    if uncond_at is not None and guided:
        cond = embeddings[len(prompts):]
        embeddings_at = lambda i: torch.cat([uncond_at(i).to(cond).expand(len(prompts), -1, -1), cond])  # noqa: E731
    with free_prompt_editing(pipe.unet, registry, control):
        final = sample(pipe.unet, scheduler, noise.expand(len(prompts), -1, -1, -1).clone(), embeddings,
                       steps, guidance, on_step=control.begin_step, progress=bar, embeddings_at=embeddings_at,
                       after_step=after_step)
    timings["denoise_s"] = time.perf_counter() - start

    images = []
    if decode:
        start = time.perf_counter()
        images = decode_latents(pipe, final)
        timings["decode_s"] = time.perf_counter() - start

    params = {
        "method": "fpe",
        "source": source,
        "targets": targets,
        "seed": None if latents is not None else seed,
        "latents_given": latents is not None,
        "steps": steps,
        "guidance": guidance,
        "negative_prompt": negative_prompt,
        "self_replace": str(step_range),
        "edited_steps": control.edited_steps(),
        "layers": layers if isinstance(layers, str) else list(layers),
        "edited_self_layers": [layer.index for layer in chosen],
        "edit_unconditional": edit_unconditional,
        "height": shape[2] * pipe.vae_scale_factor,
        "width": shape[3] * pipe.vae_scale_factor,
        "scheduler": dict(scheduler.config),
    }
    return EditResult(prompts=prompts, images=images, latents=final.cpu(), initial_latents=noise.cpu(),
                      params=params, timings=timings)


def _given_latents(latents: torch.Tensor, shape) -> torch.Tensor:
    if latents.ndim == 3:
        latents = latents.unsqueeze(0)
    if tuple(latents.shape) != tuple(shape):
        raise BadInput(f"the given latents have shape {tuple(latents.shape)} but this model and size need "
                       f"{tuple(shape)}", "pass latents of that shape or change --height/--width")
    return latents
