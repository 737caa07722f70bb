"""Free-Prompt-Editing (Liu et al., CVPR 2024): in the chosen self-attention layers and steps every target uses
its source's self-attention *map*, ``softmax(Q_src K_src^T) V_tgt`` = SDPA(Q_src, K_src, V_tgt)."""

from __future__ import annotations

from dataclasses import dataclass

from ...attention.layers import LayerSpec
from ...attention.rules import Blend, JointEdit, Rule
from ...attention.steps import StepRange
from ...errors import BadInput
from .base import DIT_FAMILIES, MethodContext, MethodPlan
from .options import CHOICE, LAYERS, STEPS, SWITCH, Options, option

OFFICIAL = "the official FPE code (sen-mao/FreePromptEditing)"
JOINT_READINGS = ("row", "image")


@dataclass(frozen=True)
class FPE(Options):
    self_replace: StepRange = option(
        "0:0.8", kind=STEPS, flag="--self-replace", label="self-replace steps",
        help="fraction range of the steps whose self-attention maps are replaced", source=OFFICIAL)
    layers: LayerSpec = option(
        "<=32x32", kind=LAYERS, flag="--layers", label="layers",
        help="self-attention layers: all, 4-14, 1,3,5-7, blocks (down.2,mid) or a token bound; on a diffusion "
             "transformer, whose layers all share one grid, the default means all",
        source=f"{OFFICIAL}: layers of at most 32x32 tokens, 3-13 of SD1.x at 512 px (the paper's text says 4-14)")
    edit_unconditional: bool = option(
        False, kind=SWITCH, flag="--edit-uncond", label="unconditional half",
        help="also replace the maps in the unconditional half of guidance", source=OFFICIAL)
    joint: str = option(
        "row", kind=CHOICE, flag="--fpe-joint", label="joint reading", choices=JOINT_READINGS,
        help="on an MM-DiT (SD3, FLUX), what the target's image tokens take from the source's joint attention: "
             "row (its whole row: the source's queries and keys over text and image keys) or image (the "
             "image-to-image block; the target's own image-to-text logits under the same softmax)",
        source="freeprompt's two readings of FPE for joint attention (issue #38); row is the map as the paper "
               "defines it, extended to the joint row")
    shared_start: StepRange = option(
        "0:0", kind=STEPS, flag="--shared-start", label="shared start",
        help="fraction range 0:END of the first steps after each of which every target's latents are set to its "
             "source's: the targets follow the source's trajectory until END, then FPE edits them (0:0: none)",
        source="freeprompt (issue #39): off, as in the official code; on the MM-DiT fixture 0:0.4 keeps the object "
               "best (README)")

    name = "fpe"
    title = "FPE"
    reference = "Liu et al., CVPR 2024"
    summary = "its self-attention maps: SDPA(Q_src, K_src, V_tgt), conditional half"

    def check(self) -> None:
        if self.shared_start.start != 0:
            raise BadInput(f"FPE's shared start {self.shared_start} does not start at 0",
                           "give 0:END, e.g. --shared-start 0:0.4")

    def plan(self, ctx: MethodContext) -> MethodPlan:
        halves = ("uncond", "cond") if self.edit_unconditional else ("cond",)
        mix = ctx.layout.mix(queries="source", keys="source", values="own", halves=halves)
        edit = JointEdit(self.joint, mix.queries) if ctx.joint else mix
        rule = Rule(ctx.self_kind, ctx.layers(self._layers(ctx), ctx.self_kind), self.self_replace, edit, self.name)
        shared = [Blend(None, 0.0, self.shared_start)] if self.shared_start.end > 0 else []
        return MethodPlan(rules=[rule], blends=shared)

    def _layers(self, ctx: MethodContext):
        """The layers given; the official token bound means every layer of a diffusion transformer (one grid)."""
        default = str(self.layers) == str(FPE.__dataclass_fields__["layers"].default)
        return "all" if default and ctx.family in DIT_FAMILIES else self.layers
