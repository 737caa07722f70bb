"""MasaCtrl (Cao et al., ICCV 2023): mutual self-attention. In the chosen layers and steps every target row attends
with its *own* queries to its source's keys and values (in both halves of guidance), so the target is painted
with the source's content: SDPA(Q_tgt, K_src, V_src). The authors' defaults start at step 4 of 50 and at layer 10
of 16 (0-based: self-attention layers 11-16 in forward order, the decoder's 32x32 and 64x64 blocks at 512 px); on
SDXL their script starts at layer 44 of 70 (0-based: layers 45-70; "may not be optimal", they note).

The start is kept as the fraction 0.08 of the steps (step 4 of 50) rather than the authors' absolute step 4: the
step at which the target starts sharing keys and values decides how much of the layout has formed, which is a
place in the noise schedule, so it should not move with --steps (at 10 steps the authors' step 4 would be 40 % of
the schedule; 0.08 gives step 0 there, and int(0.08 N) = 4 at their 50 steps).

With ``mask_words`` (a word of the source prompt and one of the target's) the target's foreground attends only to
the source's foreground keys and its background only to the source's background (the authors'
``MutualSelfAttentionControlMaskAuto``): the masks are the current step's head-averaged cross-attention maps of
those words in the quarter-grid layers (16x16 at 512 px), min-max normalised and cut at ``mask_threshold`` (0.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...attention.layers import LayerSpec
from ...attention.rules import JointEdit, MapWatch, MaskedMix, RowMix, Rule
from ...attention.steps import StepRange
from ...attention.tokens import word_token_indices
from ...errors import BadInput
from .base import MethodContext, MethodPlan
from .options import LAYERS, NUMBER, STEPS, WORDS, Options, option

RELEASE = "the MasaCtrl release (TencentARC/MasaCtrl), masactrl/masactrl.py"
AUTHORS_START = {"sd": (10, 16), "sdxl": (44, 70)}  # start layer 10 of 16, 44 of 70 (0-based): 11-16, 45-70


@dataclass(frozen=True)
class MasaCtrl(Options):
    steps: StepRange = option(
        "0.08:1", kind=STEPS, flag="--masactrl-steps", label="steps",
        help="fraction range of the steps with mutual self-attention",
        source=f"{RELEASE}: start_step=4 of 50, as a fraction so that it keeps its place in the schedule")
    layers: LayerSpec | None = option(
        None, kind=LAYERS, flag="--masactrl-layers", label="layers", help="self-attention layers",
        default_text="11-16; SDXL 45-70",
        source=f"{RELEASE}: start_layer=10 of 16 (SDXL script: 44 of 70), as the same share of another model's layers")
    mask_words: tuple[str, str] | None = option(
        None, kind=WORDS, flag="--mask-word", label="mask words",
        help="mask from a source word and a target word (give twice)", source=f"{RELEASE}: MaskAuto")
    mask_threshold: float = option(
        0.1, kind=NUMBER, flag="--mask-threshold", label="mask threshold", bounds=(0.0, 1.0),
        help="threshold of the min-max normalised word maps", source=f"{RELEASE}: MaskAuto's thres=0.1")

    name = "masactrl"
    title = "MasaCtrl"
    reference = "Cao et al., ICCV 2023"
    summary = ("its self-attention keys and values (the target keeps its queries): SDPA(Q_tgt, K_src, V_src), "
               "both halves")

    def check(self) -> None:
        if self.mask_words is not None and len(self.mask_words) != 2:
            raise BadInput(f"MasaCtrl's mask needs two words (one of the source prompt, one of the targets'), got "
                           f"{list(self.mask_words)}", "give e.g. --mask-word cat --mask-word dog")

    def plan(self, ctx: MethodContext) -> MethodPlan:
        mix = ctx.layout.mix(queries="own", keys="source", values="source", halves=("uncond", "cond"))
        edit: RowMix | MaskedMix | JointEdit = JointEdit("kv", mix.keys) if ctx.joint else mix
        watches: list[MapWatch] = []
        if self.mask_words:
            if ctx.joint:
                raise BadInput(f"MasaCtrl's --mask-words read cross-attention maps, which {ctx.family} does not have "
                               "(its text and image tokens attend jointly)", "run MasaCtrl without --mask-words")
            watch = self._watch(ctx)
            edit, watches = MaskedMix(mix, watch, self.mask_threshold), [watch]
        start = AUTHORS_START.get(ctx.family, AUTHORS_START["sd"])
        layers = ctx.layers(self.layers or ctx.tail(*start), ctx.self_kind)
        return MethodPlan(rules=[Rule(ctx.self_kind, layers, self.steps, edit, self.name)], watches=watches)

    def _watch(self, ctx: MethodContext) -> MapWatch:
        assert self.mask_words is not None  # plan() asks for a watch only with mask words
        source_word, target_word = self.mask_words
        layout, tokens = ctx.layout, {}
        for p in range(layout.num_prompts):
            word = source_word if p not in layout.targets else target_word
            tokens[layout.cond_row(p)] = word_token_indices(ctx.tokenizer, ctx.prompts[p], word, occurrence=None)
        return MapWatch(ctx.quarter_grid_cross_layers(), tokens, per_step=True)
