"""Help texts, defaults and bounded options several commands share: every number a command takes has a range,
checked by typer before anything is loaded (a usage error: one line, exit status 2)."""

from __future__ import annotations

import math
from typing import Optional

import typer

from ..diffusion.latents import MAX_SIDE
from ..models.loading import DEFAULT_MODEL

MODEL_HELP = "hub id, local diffusers folder, .safetensors file, or 'shapes' (the bundled fixture)"
CONFIG_HELP = "diffusers folder or hub id with the config of a single-file model"
REVISION_HELP = "hub revision (branch, tag or commit)"
MAX_SEED = 2**63 - 1
MAX_STEPS = 1000  # the training steps of every Stable Diffusion model


def not_empty(text: Optional[str], flag: str) -> Optional[str]:
    """A list option (comma-separated words or @file) given empty is refused: it would silently mean the default."""
    if text is not None and not text.strip(" ,@"):
        raise typer.BadParameter("is empty; give comma-separated words, or leave the option out", param_hint=flag)
    return text


def finite(value: Optional[float]) -> Optional[float]:
    """typer callback: NaN and infinities are refused by name (a range alone lets some of them through)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def seed_option(default: int = 0, help: str = "seed") -> int:
    return typer.Option(default, min=0, max=MAX_SEED, help=help)


def steps_option(help: str = "denoising steps [default: the model's, else 50]") -> Optional[int]:
    return typer.Option(None, min=1, max=MAX_STEPS, help=help)


def guidance_option(help: str = "classifier-free guidance [default: the model's, else 7.5]") -> Optional[float]:
    return typer.Option(None, min=0, max=1000, callback=finite, help=help)


def side_option(help: str) -> Optional[int]:
    """--height/--width: also checked against the pixel budget (``diffusion.check_size``) before the model loads."""
    return typer.Option(None, min=8, max=MAX_SIDE, help=help)


def count_option(default: Optional[int], help: str, low: int = 0, high: int = 1_000_000):
    """A count of items, seeds or samples: bounded, so a typo cannot start days of work."""
    return typer.Option(default, min=low, max=high, help=help)


def real_option(default: float, help: str, low: float, high: float):
    return typer.Option(default, min=low, max=high, callback=finite, help=help)


__all__ = ["CONFIG_HELP", "DEFAULT_MODEL", "MAX_SEED", "MODEL_HELP", "REVISION_HELP", "count_option", "finite",
           "not_empty",
           "guidance_option", "real_option", "seed_option", "side_option", "steps_option"]
