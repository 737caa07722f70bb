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
divided by their maximum and cut at ``blend_threshold`` (0.3).

Every range follows the project's one step rule, ``int(a*N) <= i < int(b*N)``; the authors' code computes the
cross-replace end as ``int(b*(N+1))``, the same steps for the usual 0.8 and 0.4 at 50 steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...attention import CrossMapEdit, MapWatch, Rule, word_token_indices
from ...errors import BadInput
from .base import MethodContext, MethodPlan, options_of, steps

MODES = ("replace", "refine")
SELF_LAYERS = {"sd": "<=16x16", "sdxl": "<=32x32"}  # SDXL's smallest grid at 1024 px is 32x32


@dataclass(frozen=True)
class P2P:
    mode: str = "replace"
    cross_replace: str = "0:0.8"
    self_replace: str = "0:0.4"
    self_layers: str | tuple | None = None  # None: <=16x16 (the authors' rule); <=32x32 on SDXL
    cross_layers: str | tuple = "all"
    reweight: tuple[tuple[str, float], ...] = ()
    blend: tuple[str, ...] | None = None
    blend_threshold: float = 0.3
    blend_steps: str = "0:1"

    name = "p2p"

    def __post_init__(self):
        if self.mode not in MODES:
            raise BadInput(f"unknown Prompt-to-Prompt mode {self.mode!r}", f"use one of {', '.join(MODES)}")
        if not 0.0 <= self.blend_threshold <= 1.0:
            raise BadInput(f"the blend threshold {self.blend_threshold} is outside 0..1", "use e.g. 0.3")
        for spec, what in ((self.cross_replace, "cross-replace"), (self.self_replace, "self-replace"),
                           (self.blend_steps, "blend")):
            steps(spec, f"P2P's {what} steps")

    def plan(self, ctx: MethodContext) -> MethodPlan:
        layout = ctx.layout
        cross = ctx.layers(self.cross_layers, "cross")
        plan = MethodPlan()
        if self.blend:
            watch = MapWatch(ctx.quarter_grid_cross_layers(), _blend_tokens(ctx, self.blend), per_step=False)
            hook = LocalBlend(watch, layout, self.blend_threshold, steps(self.blend_steps, "P2P's blend steps"),
                              ctx.num_steps, ctx.latent_hw)
            plan.watches.append(watch)
            plan.latent_hooks.append(hook)
        edit = self._map_edit(ctx)  # checks every target's tokens (a replace needs equal counts)
        cross_steps = steps(self.cross_replace, "P2P's cross-replace steps")
        mapped = frozenset(name for w in plan.watches for name in w.layers) if self.mode == "replace" and \
            not self.reweight else cross
        if mapped:
            plan.rules.append(Rule("cross", mapped, cross_steps, edit, self.name))
        if cross - mapped:  # a plain word swap: the source's map as it is, computed with SDPA
            replace = layout.mix(queries="source", keys="source", values="own", halves=("cond",))
            plan.rules.append(Rule("cross", cross - mapped, cross_steps, replace, self.name))
        self_steps = steps(self.self_replace, "P2P's self-replace steps")
        if self_steps.steps(ctx.num_steps):
            mix = layout.mix(queries="source", keys="source", values="own", halves=("cond",))
            layers = ctx.layers(ctx.default(self.self_layers, SELF_LAYERS), "self")
            plan.rules.append(Rule("self", layers, self_steps, mix, self.name))
        return plan

    def _map_edit(self, ctx: MethodContext) -> CrossMapEdit:
        layout, length = ctx.layout, ctx.tokenizer.model_max_length
        mappers, alphas, scales = [], [], []
        for p in layout.targets:
            source, target = ctx.prompts[layout.sources[p]], ctx.prompts[p]
            if self.mode == "replace":
                mapper, alpha = replace_mapper(ctx.tokenizer, source, target, length)
            else:
                mapper, alpha = refine_mapper(ctx.tokenizer, source, target, length)
            mappers.append(mapper)
            alphas.append(alpha)
            scales.append(reweight_scale(ctx.tokenizer, target, self.reweight, length))
        rows = tuple(layout.cond_row(p) for p in layout.targets)
        sources = tuple(layout.cond_row(layout.sources[p]) for p in layout.targets)
        return CrossMapEdit(rows, sources, torch.stack(mappers), torch.stack(alphas), torch.stack(scales))

    def options(self) -> dict:
        return options_of(self)


def token_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt's token ids as the text encoder sees them: start token, words, end token (no padding)."""
    return tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length)["input_ids"]


def replace_mapper(tokenizer, source: str, target: str, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A word swap maps every token to the same position: both prompts need the same number of tokens."""
    a, b = token_ids(tokenizer, source), token_ids(tokenizer, target)
    if len(a) != len(b):
        raise BadInput(f"Prompt-to-Prompt's replace needs prompts with the same number of tokens, but {source!r} has "
                       f"{len(a) - 2} and {target!r} has {len(b) - 2}",
                       "use --p2p-mode refine, which aligns prompts of different lengths")
    return torch.arange(length), torch.ones(length)


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


def refine_mapper(tokenizer, source: str, target: str, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every target token position: the source column it takes and whether it takes it (alpha 1) or keeps
    its own (alpha 0, an inserted token). Positions past the target's end token take the same source position."""
    paired = align(token_ids(tokenizer, source), token_ids(tokenizer, target))
    mapper, alpha = torch.arange(length), torch.ones(length)
    for n, s in enumerate(paired):
        mapper[n] = s if s >= 0 else n
        alpha[n] = 1.0 if s >= 0 else 0.0
    return mapper, alpha


def reweight_scale(tokenizer, prompt: str, reweight, length: int) -> torch.Tensor:
    """P2P's equalizer: every token position 1, the chosen words' positions in ``prompt`` their factor."""
    scale = torch.ones(length)
    for word, factor in reweight:
        scale[word_token_indices(tokenizer, prompt, word, occurrence=None)] = float(factor)
    return scale


def _blend_tokens(ctx: MethodContext, words) -> dict[int, list[int]]:
    if len(words) != ctx.layout.num_prompts:
        raise BadInput(f"local blend needs one word per prompt (source first): {ctx.layout.num_prompts} prompts, "
                       f"{len(words)} word(s)", "give e.g. --blend cat --blend tiger")
    return {ctx.layout.cond_row(p): word_token_indices(ctx.tokenizer, ctx.prompts[p], word, occurrence=None)
            for p, word in enumerate(words)}


class LocalBlend:
    """After a step in ``steps``: every target's latents outside the union of its source's and its own word mask
    are reset to the source's (see the module docstring)."""

    def __init__(self, watch: MapWatch, layout, threshold: float, steps, num_steps: int, latent_hw):
        self.watch, self.layout, self.threshold = watch, layout, threshold
        self.steps, self.num_steps, self.latent_hw = steps, num_steps, tuple(latent_hw)

    def masks(self) -> torch.Tensor:
        """(prompts, 1, h, w) boolean word masks on the latent grid, in prompt order."""
        maps = F.max_pool2d(self.watch.sums[:, None], kernel_size=3, stride=1, padding=1)
        maps = F.interpolate(maps, size=self.latent_hw, mode="nearest")
        maps = maps / maps.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        return maps > self.threshold

    def __call__(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        if not self.steps.contains(step, self.num_steps) or self.watch.sums is None:
            return latents
        masks = self.masks().to(latents.device)
        blended = latents.clone()
        for p in self.layout.targets:
            s = self.layout.sources[p]
            inside = (masks[s] | masks[p]).to(latents.dtype)
            blended[p] = latents[s] + inside * (latents[p] - latents[s])
        return blended
