"""MasaCtrl (Cao et al., ICCV 2023): mutual self-attention. In the chosen layers and steps every target row attends
with its *own* queries to its source's keys and values (in both halves of guidance), so the target is painted
with the source's content: SDPA(Q_tgt, K_src, V_src). The authors' defaults start at step 4 of 50 and at layer 10
of 16 (0-based: self-attention layers 11-16 in forward order, the decoder's 32x32 and 64x64 blocks at 512 px); on
SDXL their script starts at layer 44 of 70 (0-based: layers 45-70; "may not be optimal", they note).

With ``mask_words`` (a word of the source prompt and one of the target's) the target's foreground attends only to
the source's foreground keys and its background only to the source's background (the authors'
``MutualSelfAttentionControlMaskAuto``): the masks are the current step's head-averaged cross-attention maps of
those words in the quarter-grid layers (16x16 at 512 px), min-max normalised and cut at ``mask_threshold`` (0.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...attention import MapWatch, MaskedMix, Rule, word_token_indices
from ...errors import BadInput
from .base import MethodContext, MethodPlan, options_of, steps

AUTHORS_STEPS = "0.08:1"  # step 4 of 50
AUTHORS_START = {"sd": (10, 16), "sdxl": (44, 70)}  # start layer 10 of 16, 44 of 70 (0-based): 11-16, 45-70


@dataclass(frozen=True)
class MasaCtrl:
    steps: str = AUTHORS_STEPS
    layers: str | tuple | None = None  # None: the authors' layers for the model family
    mask_words: tuple[str, str] | None = None
    mask_threshold: float = 0.1

    name = "masactrl"

    def __post_init__(self):
        if not 0.0 <= self.mask_threshold <= 1.0:
            raise BadInput(f"MasaCtrl's mask threshold {self.mask_threshold} is outside 0..1", "use e.g. 0.1")
        if self.mask_words is not None and len(self.mask_words) != 2:
            raise BadInput(f"MasaCtrl's mask needs two words (one of the source prompt, one of the targets'), got "
                           f"{list(self.mask_words)}", "give e.g. --mask-word cat --mask-word dog")
        steps(self.steps, "MasaCtrl's steps")

    def plan(self, ctx: MethodContext) -> MethodPlan:
        mix = ctx.layout.mix(queries="own", keys="source", values="source", halves=("uncond", "cond"))
        edit, watches = mix, []
        if self.mask_words:
            watch = self._watch(ctx)
            edit, watches = MaskedMix(mix, watch, self.mask_threshold), [watch]
        layers = ctx.layers(self.layers or ctx.tail(*AUTHORS_START[ctx.family]), "self")
        rule = Rule("self", layers, steps(self.steps, "MasaCtrl's steps"), edit, self.name)
        return MethodPlan(rules=[rule], watches=watches)

    def _watch(self, ctx: MethodContext) -> MapWatch:
        source_word, target_word = self.mask_words
        layout, tokens = ctx.layout, {}
        for p in range(layout.num_prompts):
            word = source_word if p not in layout.targets else target_word
            tokens[layout.cond_row(p)] = word_token_indices(ctx.tokenizer, ctx.prompts[p], word, occurrence=None)
        return MapWatch(ctx.quarter_grid_cross_layers(), tokens, per_step=True)

    def options(self) -> dict:
        return options_of(self)
