"""Latent shapes: what size of noise a pipeline's UNet takes for an image of a given size."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import BadInput

if TYPE_CHECKING:
    import torch

BYTES_PER_PIXEL = 8 * 1024  # a generous estimate of one image row's activation memory per pixel (fp32, SDPA)
MIN_BUDGET = 1024 * 1024  # the budget never falls below one megapixel (SDXL's native 1024 x 1024)
MAX_SIDE = 16384
DEFAULT_TRANSFORMER_LATENT = 128  # FLUX's default: 1024 px
MAX_TARGETS = 64  # target prompts one source's batch takes: 2 x 65 UNet rows with guidance


def pixel_budget() -> int:
    """The largest image (in pixels) a run may ask for: ``$FREEPROMPT_MAX_PIXELS`` if set, else the memory
    available now divided by ``BYTES_PER_PIXEL`` (24 GiB free: about 3 megapixels), at least one megapixel."""
    given = os.environ.get("FREEPROMPT_MAX_PIXELS")
    if given:
        try:
            budget = int(float(given))
        except (ValueError, OverflowError):
            budget = 0
        if budget < 1:
            raise BadInput(f"FREEPROMPT_MAX_PIXELS={given!r} is not a whole number of pixels above 0",
                           "set it to e.g. 4000000, or unset it") from None
        return budget
    return max(MIN_BUDGET, available_memory() // BYTES_PER_PIXEL)


def available_memory() -> int:
    """Bytes of host memory available now (MemAvailable), or 16 GiB where it cannot be read."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return 16 * 2**30


def check_size(height: int | None, width: int | None, multiple: int = 8) -> None:
    """Refuse an image size before any model is loaded: sides positive multiples of ``multiple`` up to
    ``MAX_SIDE``, and at most ``pixel_budget()`` pixels (``None``: the model's own size)."""
    for name, value in (("height", height), ("width", width)):
        if value is not None and (value <= 0 or value % multiple or value > MAX_SIDE):
            raise BadInput(f"{name} {value} is not a positive multiple of {multiple} up to {MAX_SIDE}",
                           f"use e.g. --{name} {min(MAX_SIDE, max(multiple, round(value / multiple) * multiple))}")
    if height is not None and width is not None and height * width > pixel_budget():
        budget = pixel_budget()
        raise BadInput(f"{height} x {width} is {height * width / 1e6:.1f} megapixels, over this machine's budget of "
                       f"{budget / 1e6:.1f} megapixels (from its free memory)",
                       "use a smaller --height/--width, or raise the budget with FREEPROMPT_MAX_PIXELS")


def check_targets(count: int) -> None:
    """Refuse more target prompts than one batch takes (``MAX_TARGETS``), before anything is built."""
    if count > MAX_TARGETS:
        raise BadInput(f"{count} target prompts, more than the {MAX_TARGETS} one batch takes",
                       "split them into several runs")


def latent_shape(pipe, height: int | None, width: int | None) -> tuple[int, int, int, int]:
    """``(1, channels, h, w)`` latents for an image of ``height x width`` pixels (default: the model's size). A
    UNet takes any multiple of the VAE's factor; a transformer's 2x2 patches (or FLUX's packing) need twice that."""
    factor = pipe.vae_scale_factor
    unet = getattr(pipe, "unet", None)
    network = unet if unet is not None else pipe.transformer
    side = getattr(network.config, "sample_size", None) or DEFAULT_TRANSFORMER_LATENT  # FLUX names none
    height = side * factor if height is None else height
    width = side * factor if width is None else width
    check_size(height, width, max(8, factor) * (1 if unet is not None else 2))
    channels = network.config.in_channels if unet is not None else pipe.vae.config.latent_channels
    return (1, channels, height // factor, width // factor)


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
    if not latents.isfinite().all():
        raise BadInput("the given latents hold NaN or infinite values", "pass finite noise, e.g. from --save-latents")
    return latents
