"""Prompt-to-Prompt (Hertz et al., ICLR 2023): targets reuse the source's *cross*-attention maps, so the source's
layout follows the words that stay.

In the cross-attention layers ``cross_layers`` (all of them, as the authors' code) and the ``cross_replace`` steps,
a target's map is built from its source's (conditional rows only, as the authors' code):
- ``replace`` (a word swap; the prompts must have the same number of tokens): the source's map as it is, so the
  target computes SDPA(Q_src, K_src_text, V_tgt_text) and no map is materialised;
- ``refine`` (prompts of different lengths): the tokens of the target are aligned to the source's (a global
  alignment of the token ids: match +1, mismatch -1, gap 0); aligned tokens take the source's column, new tokens
  keep the target's own;
- ``reweight``: chosen words' columns of the (replaced or refined) map are scaled, e.g. {"fluffy": 3}.
In the ``self_replace`` steps and the self-attention layers ``self_layers`` (at most 16x16 tokens, the authors'
rule; at most 32x32 on SDXL, whose smallest grid is 32x32 at 1024 px, as the community SDXL port does), targets
also take the source's self-attention map. ``blend`` (one word per prompt, source first) is the
authors' local blend: after every step in ``blend_steps`` each target's latents outside the union of the source
word's and its own word's mask are reset to the source's; the masks are the words' cross-attention maps in the
quarter-grid layers (16x16 at 512 px) summed over the steps so far, max-pooled 3x3, scaled to the latent grid,
divided by their maximum and cut at ``blend_threshold`` (0.3). As in the released code (its ``LocalBlend``'s
``start_blend=0.2``), the blend starts after the first fifth of the steps.

Every range follows the project's one step rule, ``int(a*N) <= i < int(b*N)``; the authors' code computes the
cross-replace end as ``int(b*(N+1))``, the same steps for the usual 0.8 and 0.4 at 50 steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...attention.layers import LayerSpec
from ...attention.rules import Blend, CrossMapEdit, JointEdit, MapWatch, Rule
from ...attention.steps import StepRange
from ...attention.tokens import word_token_indices
from ...errors import BadInput
from .base import MethodContext, MethodPlan
from .options import CHOICE, LAYERS, NUMBER, STEPS, WEIGHTS, WORDS, Options, Preset, option

NOTEBOOK = "the P2P release (google/prompt-to-prompt), prompt-to-prompt_stable.ipynb"
PIE_RELEASE = "the PnP-Inversion release behind PIE-Bench's P2P rows (cure-lab/PnPInversion)"
MODES = ("replace", "refine")
SELF_LAYERS = {"sd": "<=16x16", "sdxl": "<=32x32", "dit": "none"}  # SDXL's smallest grid at 1024 px is 32x32; a
# diffusion transformer has one grid, so "the smallest layers" names none of them


@dataclass(frozen=True)
class P2P(Options):
    mode: str = option(
        "replace", kind=CHOICE, flag="--p2p-mode", label="mode", choices=MODES,
        help="replace (a word swap: prompts of the same token count) or refine (prompts of different lengths)",
        source=f"{NOTEBOOK}: AttentionReplace and AttentionRefine")
    cross_replace: StepRange = option(
        "0:0.8", kind=STEPS, flag="--cross-replace", label="cross-replace steps", joins="fpe",
        help="fraction range of the steps whose cross-attention maps are replaced; beside --method fpe it means "
             "fpe+p2p", source=f"{NOTEBOOK}: cross_replace_steps=0.8")
    self_replace: StepRange = option(
        "0:0.4", kind=STEPS, flag="--p2p-self-replace", label="self-replace steps",
        help="fraction range of the steps whose self-attention maps are replaced (off beside FPE)",
        source=f"{NOTEBOOK}: self_replace_steps=0.4")
    self_layers: LayerSpec | None = option(
        None, kind=LAYERS, flag="--p2p-self-layers", label="self-replace layers",
        default_text="<=16x16; SDXL <=32x32; a DiT none",
        help="self-attention layers whose maps are replaced",
        source=f"{NOTEBOOK}: self-attention replaced only in layers of at most 16x16 tokens (the PnP-Inversion "
               "release behind PIE-Bench's P2P rows uses 32x32; SDXL ports use 32x32, SDXL's smallest grid)")
    cross_layers: LayerSpec = option(
        "all", kind=LAYERS, flag="--cross-layers", label="cross-replace layers",
        help="cross-attention layers whose maps are replaced", source=f"{NOTEBOOK}: every cross-attention layer")
    reweight: tuple[tuple[str, float], ...] = option(
        (), kind=WEIGHTS, flag="--reweight", label="reweighting",
        help="WORD=FACTOR scales a target word's attention (repeat)", source=f"{NOTEBOOK}: AttentionReweight")
    blend: tuple[str, ...] | None = option(
        None, kind=WORDS, flag="--blend", label="local blend words",
        help="local blend: one word per prompt, source first (repeat)", source=f"{NOTEBOOK}: LocalBlend")
    blend_threshold: float = option(
        0.3, kind=NUMBER, flag="--blend-threshold", label="blend threshold", bounds=(0.0, 1.0),
        help="local blend mask threshold", source=f"{NOTEBOOK}: LocalBlend th=(.3, .3)")
    blend_steps: StepRange = option(
        "0.2:1", kind=STEPS, flag="--blend-steps", label="blend steps",
        help="fraction range of the steps after which the local blend applies",
        source=f"{NOTEBOOK} and null_text_w_ptp.ipynb: LocalBlend start_blend=0.2")

    presets = {"pie-bench": Preset(
        "P2P as PIE-Bench's tables ran it: refine, cross-attention maps 0:0.4, self-attention maps 0:0.6 in layers of "
        "at most 32x32 tokens (the benchmark's blend words and reweighting of the new word by 2 come per edit)",
        {"p2p_mode": "refine", "cross_replace": "0:0.4", "p2p_self_replace": "0:0.6", "p2p_self_layers": "<=32x32"},
        f"{PIE_RELEASE}: run_editing_p2p.py (cross_replace_steps=0.4, self_replace_steps=0.6), models/p2p_editor.py "
        "(is_replace_controller=False: AttentionRefine), models/p2p/attention_control.py (self maps up to 32x32)")}

    name = "p2p"
    title = "P2P"
    reference = "Hertz et al., ICLR 2023"
    summary = ("its cross-attention maps in every cross-attention layer, conditional half; and its self-attention "
               "maps in small layers")
    combined = {"fpe": {"self_replace": "0:0"}}  # beside FPE, FPE replaces the self-attention maps

    def plan(self, ctx: MethodContext) -> MethodPlan:
        if ctx.joint:
            return self._joint_plan(ctx)
        layout = ctx.layout
        cross = ctx.layers(self.cross_layers, "cross")
        plan = MethodPlan()
        if self.blend:
            watch = MapWatch(ctx.quarter_grid_cross_layers(), _blend_tokens(ctx, self.blend), per_step=False)
            plan.watches.append(watch)
            plan.blends.append(Blend(watch, self.blend_threshold, self.blend_steps))
        edit = self._map_edit(ctx)  # checks every target's tokens (a replace needs equal counts)
        mapped = frozenset(name for w in plan.watches for name in w.layers) if self.mode == "replace" and \
            not self.reweight else cross
        if mapped:
            plan.rules.append(Rule("cross", mapped, self.cross_replace, edit, self.name))
        if cross - mapped:  # a plain word swap: the source's map as it is, computed with SDPA
            replace = layout.mix(queries="source", keys="source", values="own", halves=("cond",))
            plan.rules.append(Rule("cross", cross - mapped, self.cross_replace, replace, self.name))
        layers = ctx.layers(ctx.default(self.self_layers, SELF_LAYERS), "self")
        if self.self_replace.steps(ctx.num_steps) and layers:
            mix = layout.mix(queries="source", keys="source", values="own", halves=("cond",))
            plan.rules.append(Rule("self", layers, self.self_replace, mix, self.name))
        return plan

    def _joint_plan(self, ctx: MethodContext) -> MethodPlan:
        """On an MM-DiT, whose text and image tokens attend together: the image-to-text block of the joint
        attention (a word swap), reweighted; the UNet-only parts refused."""
        self._check_joint(ctx)
        sources = ctx.layout.mix(queries="source", keys="source", values="own", halves=("cond",)).queries
        scales = []
        for p in ctx.layout.targets:
            for tokenizer, _ in ctx.text_parts or ((ctx.tokenizer, 0),):  # every part must keep its token count
                replace_mapper(tokenizer, ctx.prompts[ctx.layout.sources[p]], ctx.prompts[p], 0)
            if self.reweight:
                scale = [1.0] * ctx.text_tokens
                for word, factor in self.reweight:
                    for position in ctx.text_positions(ctx.prompts[p], word):
                        scale[position] = float(factor)
                scales.append((ctx.layout.cond_row(p), tuple(scale)))
        edit = JointEdit("text", sources, tuple(scales))
        return MethodPlan(rules=[Rule("joint", ctx.layers(self.cross_layers, "joint"), self.cross_replace, edit,
                                      self.name)])

    def _check_joint(self, ctx: MethodContext) -> None:
        asked = [(self.mode == "refine", "--p2p-mode refine"), (bool(self.blend), "--blend"),
                 (self.self_layers is not None and str(self.self_layers).strip().lower() != "none",
                  "--p2p-self-layers")]
        for given, flag in asked:
            if given:
                raise BadInput(f"Prompt-to-Prompt's {flag} is defined for models with cross-attention layers, not for "
                               f"the joint attention of {ctx.family}",
                               "use the word swap (--p2p-mode replace) with --reweight, or FPE for the image block")

    def _map_edit(self, ctx: MethodContext) -> CrossMapEdit:
        layout, length = ctx.layout, ctx.text_tokens
        mappers, alphas, scales = [], [], []
        for p in layout.targets:
            source, target = ctx.prompts[layout.sources[p]], ctx.prompts[p]
            mapping = replace_mapper if self.mode == "replace" else refine_mapper
            mapper, alpha = mapping(ctx.tokenizer, source, target, length)
            mappers.append(tuple(mapper))
            alphas.append(tuple(alpha))
            scales.append(tuple(reweight_scale(ctx.tokenizer, target, self.reweight, length)))
        rows = tuple(layout.cond_row(p) for p in layout.targets)
        sources = tuple(layout.cond_row(layout.sources[p]) for p in layout.targets)
        return CrossMapEdit(rows, sources, tuple(mappers), tuple(alphas), tuple(scales))


def token_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt's token ids as the text encoder sees them: start token, words, end token (no padding)."""
    return tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length)["input_ids"]


def replace_mapper(tokenizer, source: str, target: str, length: int) -> tuple[list[int], list[float]]:
    """A word swap maps every token to the same position: both prompts need the same number of tokens."""
    a, b = token_ids(tokenizer, source), token_ids(tokenizer, target)
    if len(a) != len(b):
        raise BadInput(f"Prompt-to-Prompt's replace needs prompts with the same number of tokens, but {source!r} has "
                       f"{len(a) - 2} and {target!r} has {len(b) - 2}",
                       "use --p2p-mode refine, which aligns prompts of different lengths")
    return list(range(length)), [1.0] * length


def align(source: list[int], target: list[int]) -> list[int]:
    """Global alignment of two token sequences (match +1, mismatch -1, gap 0; ties prefer a gap in the source,
    then in the target, then a pairing, as the authors' aligner): for every target position, the source position
    paired with it, or -1 for a token the target inserts."""
    n, m = len(source), len(target)
    score = [[0] * (m + 1) for _ in range(n + 1)]
    move = [["left"] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        move[i][0] = "up"
        for j in range(1, m + 1):
            left, up = score[i][j - 1], score[i - 1][j]
            diag = score[i - 1][j - 1] + (1 if source[i - 1] == target[j - 1] else -1)
            best = max(left, up, diag)
            score[i][j] = best
            move[i][j] = "left" if left == best else "up" if up == best else "diag"
    paired, i, j = [], n, m
    while i > 0 or j > 0:
        step = move[i][j] if i > 0 else "left"
        if step == "diag":
            paired.append(i - 1)
            i, j = i - 1, j - 1
        elif step == "left":
            paired.append(-1)
            j -= 1
        else:
            i -= 1
    return paired[::-1]


def refine_mapper(tokenizer, source: str, target: str, length: int) -> tuple[list[int], list[float]]:
    """For every target token position: the source column it takes and whether it takes it (alpha 1) or keeps
    its own (alpha 0, an inserted token). Positions past the target's end token take the same source position."""
    paired = align(token_ids(tokenizer, source), token_ids(tokenizer, target))
    mapper, alpha = list(range(length)), [1.0] * length
    for n, s in enumerate(paired):
        mapper[n] = s if s >= 0 else n
        alpha[n] = 1.0 if s >= 0 else 0.0
    return mapper, alpha


def reweight_scale(tokenizer, prompt: str, reweight, length: int) -> list[float]:
    """P2P's equalizer: every token position 1, the chosen words' positions in ``prompt`` their factor."""
    scale = [1.0] * length
    for word, factor in reweight:
        for position in word_token_indices(tokenizer, prompt, word, occurrence=None):
            scale[position] = float(factor)
    return scale


def _blend_tokens(ctx: MethodContext, words) -> dict[int, list[int]]:
    if len(words) != ctx.layout.num_prompts:
        raise BadInput(f"local blend needs one word per prompt (source first): {ctx.layout.num_prompts} prompts, "
                       f"{len(words)} word(s)", "give e.g. --blend cat --blend tiger")
    return {ctx.layout.cond_row(p): word_token_indices(ctx.tokenizer, ctx.prompts[p], word, occurrence=None)
            for p, word in enumerate(words)}
