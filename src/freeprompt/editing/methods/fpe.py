"""Free-Prompt-Editing (Liu et al., CVPR 2024): in the chosen self-attention layers and steps every target uses
its source's self-attention *map*, ``softmax(Q_src K_src^T) V_tgt`` = SDPA(Q_src, K_src, V_tgt)."""

from __future__ import annotations

from dataclasses import dataclass

from ...attention.layers import LayerSpec
from ...attention.rules import Rule
from ...attention.steps import StepRange
from .base import MethodContext, MethodPlan
from .options import LAYERS, STEPS, SWITCH, Options, option

OFFICIAL = "the official FPE code (sen-mao/FreePromptEditing)"


@dataclass(frozen=True)
class FPE(Options):
    self_replace: StepRange = option(
        "0:0.8", kind=STEPS, flag="--self-replace", label="self-replace steps",
        help="fraction range of the steps whose self-attention maps are replaced", source=OFFICIAL)
    layers: LayerSpec = option(
        "<=32x32", kind=LAYERS, flag="--layers", label="layers",
        help="self-attention layers: all, 4-14, 1,3,5-7, blocks (down.2,mid) or a token bound",
        source=f"{OFFICIAL}: layers of at most 32x32 tokens, 3-13 of SD1.x at 512 px (the paper's text says 4-14)")
    edit_unconditional: bool = option(
        False, kind=SWITCH, flag="--edit-uncond", label="unconditional half",
        help="also replace the maps in the unconditional half of guidance", source=OFFICIAL)

    name = "fpe"
    title = "FPE"
    reference = "Liu et al., CVPR 2024"
    summary = "its self-attention maps: SDPA(Q_src, K_src, V_tgt), conditional half"

    def plan(self, ctx: MethodContext) -> MethodPlan:
        halves = ("uncond", "cond") if self.edit_unconditional else ("cond",)
        mix = ctx.layout.mix(queries="source", keys="source", values="own", halves=halves)
        rule = Rule("self", ctx.layers(self.layers, "self"), self.self_replace, mix, self.name)
        return MethodPlan(rules=[rule])
