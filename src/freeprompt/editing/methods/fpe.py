"""Free-Prompt-Editing (Liu et al., CVPR 2024): in the chosen self-attention layers and steps every target uses
its source's self-attention *map*, ``softmax(Q_src K_src^T) V_tgt`` = SDPA(Q_src, K_src, V_tgt)."""

from __future__ import annotations

from dataclasses import dataclass

from ...attention import DEFAULT_LAYERS, DEFAULT_SELF_REPLACE, Rule
from .base import MethodContext, MethodPlan, options_of, steps


@dataclass(frozen=True)
class FPE:
    """``self_replace``: the fraction range of steps (the official code's default ``0:0.8``); ``layers``: the
    self-attention layers (default ``<=32x32``, the official code's rule: layers 3-13 of SD1.x at 512 px);
    ``edit_unconditional``: also in the unconditional half of guidance (off, as in the official code)."""

    self_replace: str = DEFAULT_SELF_REPLACE
    layers: str | tuple = DEFAULT_LAYERS
    edit_unconditional: bool = False

    name = "fpe"

    def __post_init__(self):
        steps(self.self_replace, "FPE's self-replace steps")

    def plan(self, ctx: MethodContext) -> MethodPlan:
        halves = ("uncond", "cond") if self.edit_unconditional else ("cond",)
        mix = ctx.layout.mix(queries="source", keys="source", values="own", halves=halves)
        rule = Rule("self", ctx.layers(self.layers, "self"), steps(self.self_replace, "FPE's self-replace steps"), mix,
                    self.name)
        return MethodPlan(rules=[rule])

    def options(self) -> dict:
        return options_of(self)
