"""Latent shapes: what size of noise a pipeline's UNet takes for an image of a given size."""

from __future__ import annotations

import torch

from ..errors import BadInput


def latent_shape(pipe, height: int | None, width: int | None) -> tuple[int, int, int, int]:
    """``(1, channels, h, w)`` latents for an image of ``height x width`` pixels (default: the model's size)."""
    factor = pipe.vae_scale_factor
    height = pipe.unet.config.sample_size * factor if height is None else height
    width = pipe.unet.config.sample_size * factor if width is None else width
    multiple = max(8, factor)
    for name, value in (("height", height), ("width", width)):
        if value <= 0 or value % multiple:
            raise BadInput(f"{name} {value} is not a positive multiple of {multiple}",
                           f"use e.g. {max(multiple, round(value / multiple) * multiple)}")
    return (1, pipe.unet.config.in_channels, height // factor, width // factor)


def image_size(pipe, shape: tuple[int, ...]) -> tuple[int, int]:
    """``(width, height)`` in pixels of latents of ``shape``."""
    return shape[-1] * pipe.vae_scale_factor, shape[-2] * pipe.vae_scale_factor


def check_latents(latents: torch.Tensor, shape) -> torch.Tensor:
    """Given noise as ``(1, C, h, w)``; a one-line error unless it has ``shape`` (a ``(C, h, w)`` tensor is
    taken as one row)."""
    if latents.ndim == 3:
        latents = latents.unsqueeze(0)
    if tuple(latents.shape) != tuple(shape):
        raise BadInput(f"the given latents have shape {tuple(latents.shape)} but this model and size need "
                       f"{tuple(shape)}", "pass latents of that shape or change --height/--width")
    if not torch.isfinite(latents).all():
        raise BadInput("the given latents hold NaN or infinite values", "pass finite noise, e.g. from --save-latents")
    return latents
