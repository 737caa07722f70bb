"""Help texts, defaults and bounded options several commands share: every number a command takes has a range,
checked by typer before anything is loaded (a usage error: one line, exit status 2)."""

from __future__ import annotations

import math
import warnings
from typing import Optional

import typer

from ..diffusion.latents import MAX_SIDE
from ..models.names import DEFAULT_MODEL

MODEL_HELP = ("hub id, local diffusers folder, .safetensors file, 'shapes' or 'shapes-mmdit' (the bundled fixtures: "
              "a U-Net and an SD3-layout MM-DiT) [default: "
              f"{DEFAULT_MODEL}; $FREEPROMPT_MODEL sets it for every command]")
DEVICE_HELP = "auto, cuda, cuda:N, mps or cpu"
DTYPE_HELP = "fp32, fp16 or bf16"
OFFLOAD_HELP = ("diffusers' CPU offload onto --device: none; model (each model moved to the GPU when it runs: the "
                "largest model's memory); group (each layer: least memory, slowest)")
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


def model_option(help: str = MODEL_HELP) -> str:
    """--model: the same default in every command."""
    return typer.Option(DEFAULT_MODEL, "--model", "-m", help=help, show_default=False)


def device_option() -> str:
    return typer.Option("auto", help=DEVICE_HELP)


def dtype_option() -> str:
    return typer.Option("fp32", help=DTYPE_HELP)


def offload_option() -> str:
    return typer.Option("none", help=OFFLOAD_HELP)


def quiet_option() -> bool:
    return typer.Option(False, "--quiet", "-q", help="no progress bar")


def limit_option(help: str, default: Optional[int] = None, high: int = 10**6) -> Optional[int]:
    """--limit: how many items a run takes (every command's one name for it)."""
    return typer.Option(default, "--limit", min=1, max=high, help=help)


def num_shards_option() -> Optional[int]:
    return typer.Option(None, min=1, max=100_000, help="processes splitting the work [default: the launcher's "
                        "WORLD_SIZE, else 1]")


def shard_index_option() -> Optional[int]:
    return typer.Option(None, min=0, max=99_999, help="this process's index [default: the launcher's RANK, else 0]")


def old_spelling(flag: str, **bounds):
    """A renamed option's old spelling: hidden from --help, still read (see ``renamed``)."""
    return typer.Option(None, flag, hidden=True, **bounds)


def renamed(value, old_value, old: str, new: str):
    """The value of an option given under its old spelling (with a one-line warning), else ``value``."""
    if old_value is None:
        return value
    warnings.warn(f"{old} is now called {new}; the old name will go in a later release", FutureWarning, stacklevel=2)
    return old_value


def real_option(default: float, help: str, low: float, high: float):
    return typer.Option(default, min=low, max=high, callback=finite, help=help)


__all__ = ["CONFIG_HELP", "DEFAULT_MODEL", "DEVICE_HELP", "DTYPE_HELP", "MAX_SEED", "MODEL_HELP", "OFFLOAD_HELP",
           "REVISION_HELP", "count_option", "device_option", "dtype_option", "finite", "guidance_option",
           "limit_option", "model_option", "not_empty", "num_shards_option", "offload_option", "old_spelling",
           "shard_index_option", "quiet_option", "renamed", "real_option", "seed_option", "side_option",
           "steps_option"]
