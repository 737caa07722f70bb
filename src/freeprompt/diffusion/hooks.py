"""What a sampling run may do around a step: the ``StepHooks`` the sampling loop calls (torch-free, so that the
floors above can declare hooks without importing the loop)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from .prompts import Conditioning


class StepHooks:
    """What a sampling run may do around step ``i`` (0-based); the defaults do nothing. Subclass and override.

    * ``begin_step(i)``: before the UNet call of step ``i`` (edit controls and recorders learn the step here;
      nothing infers it by counting attention calls);
    * ``conditioning(i, conditioning)``: the UNet's ``Conditioning`` for step ``i`` (e.g. null-text inversion's
      per-step unconditional rows); return it unchanged otherwise;
    * ``after_step(i, latents)``: the latents after step ``i`` (e.g. pinning a branch to an inversion
      trajectory); return ``latents`` unchanged otherwise;
    * ``end_run()``: after the last step (the next UNet call belongs to no step of this run).
    """

    def begin_step(self, step: int) -> None:
        pass

    def conditioning(self, step: int, conditioning: Conditioning) -> Conditioning:
        return conditioning

    def after_step(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def end_run(self) -> None:
        pass
