"""Which rows, layers and steps are edited, and how: the rules an editing method hands to the sampling loop.

A method (FPE, Prompt-to-Prompt, MasaCtrl, Plug-and-Play: ``editing/methods``) turns its options into ``Rule``s:
in these layers and these steps, compute attention this way (a ``RowMix``: every row attends with some row's
queries, keys and values; a ``CrossMapEdit``: P2P's materialised cross-attention maps; a ``MaskedMix``: MasaCtrl's
foreground/background mutual attention). The ``EditControl`` holds the rules of one sampling run. The sampling
loop tells it the current step (``begin_step``, as a ``StepHooks``); nothing here infers the step by counting
attention calls. Processors (``processors.py``) ask it, at every call, what to do in their layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..diffusion.sampler import StepHooks
from ..errors import BadInput
from .layers import AttentionLayer
from .steps import StepRange

# FPE's defaults, as the official code runs it: self-attention layers with at most 32x32 tokens (layers 3-13 of
# SD1.x at 512 px), the first 80 % of the denoising steps.
DEFAULT_LAYERS = "<=32x32"
DEFAULT_SELF_REPLACE = "0:0.8"

HALVES = ("uncond", "cond")


@dataclass(frozen=True)
class BatchLayout:
    """Rows of the UNet batch. Prompts are numbered 0..P-1; ``sources[p]`` is the prompt whose attention prompt
    ``p`` borrows (``p`` itself for a source). With classifier-free guidance the batch is ``[unconditional rows of
    all prompts, conditional rows of all prompts]``, as in diffusers pipelines."""

    sources: tuple[int, ...]
    guidance: bool = True

    @classmethod
    def one_source(cls, num_targets: int, guidance: bool = True) -> "BatchLayout":
        return cls(sources=(0,) * (num_targets + 1), guidance=guidance)

    @property
    def num_prompts(self) -> int:
        return len(self.sources)

    @property
    def num_rows(self) -> int:
        return self.num_prompts * (2 if self.guidance else 1)

    @property
    def targets(self) -> list[int]:
        return [p for p, s in enumerate(self.sources) if s != p]

    def offset(self, half: str) -> int | None:
        """The first row of ``half`` ("uncond" or "cond"); None for "uncond" without guidance."""
        if half not in HALVES:
            raise ValueError(f"unknown half {half!r}")
        if not self.guidance:
            return None if half == "uncond" else 0
        return 0 if half == "uncond" else self.num_prompts

    def cond_row(self, prompt: int) -> int:
        return self.offset("cond") + prompt

    def mix(self, queries: str = "own", keys: str = "own", values: str = "own",
            halves: tuple[str, ...] = ("cond",)) -> "RowMix":
        """A ``RowMix`` in which every target row of ``halves`` takes its queries, keys and values from ``own``
        (itself), ``source`` (its source's row in the same half) or ``source_cond`` (its source's conditional row);
        every other row attends as usual."""
        picks = {"queries": queries, "keys": keys, "values": values}
        rows = {name: list(range(self.num_rows)) for name in picks}
        for half in halves:
            start = self.offset(half)
            if start is None:
                continue
            for p in self.targets:
                for name, pick in picks.items():
                    rows[name][start + p] = self._pick(pick, p, start)
        return RowMix(tuple(rows["queries"]), tuple(rows["keys"]), tuple(rows["values"]))

    def _pick(self, pick: str, prompt: int, start: int) -> int:
        if pick == "own":
            return start + prompt
        if pick == "source":
            return start + self.sources[prompt]
        if pick == "source_cond":
            return self.cond_row(self.sources[prompt])
        raise ValueError(f"unknown row choice {pick!r}")


@dataclass(frozen=True)
class RowMix:
    """Attention in which row ``b`` uses the queries of row ``queries[b]``, the keys of ``keys[b]`` and the values
    of ``values[b]`` (for cross-attention: keys and values of that row's text). Computed with SDPA, no map."""

    queries: tuple[int, ...]
    keys: tuple[int, ...]
    values: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class CrossMapEdit:
    """Prompt-to-Prompt's edit of materialised cross-attention maps, on conditional rows: for target row ``t``
    (source row ``s``) the new map is ``mapped(M_s) * alpha + M_t * (1 - alpha)``, times ``scale`` per token,
    where ``mapped`` gathers the source's token columns ``mapper`` (see ``editing/methods/p2p.py``)."""

    targets: tuple[int, ...]  # conditional batch rows edited
    sources: tuple[int, ...]  # their source rows
    mapper: torch.Tensor  # (targets, tokens) long: source token column of each target token
    alpha: torch.Tensor  # (targets, tokens): 1 where the source's column is used, 0 where the target keeps its own
    scale: torch.Tensor  # (targets, tokens): P2P's reweighting equalizer (1: unchanged)


@dataclass(frozen=True, eq=False)
class MaskedMix:
    """MasaCtrl's mutual self-attention with masks from cross-attention maps: target rows attend with their own
    queries to the source's keys and values, once restricted to the source's foreground keys and once to its
    background; the target's foreground takes the first, its background the second. The masks come from the
    current step's maps of ``watch`` (conditional rows); until there are any, it is a plain ``mix``."""

    mix: RowMix
    watch: "MapWatch"
    threshold: float


@dataclass(frozen=True)
class Rule:
    """One decision of a method: in these layers of ``kind`` and these steps, attend with ``edit``."""

    kind: str  # "self" or "cross"
    layers: frozenset[str]
    steps: StepRange
    edit: object  # RowMix | CrossMapEdit | MaskedMix
    method: str  # who made the rule, for messages


@dataclass(eq=False)
class MapWatch:
    """Cross-attention maps a method reads while it runs (P2P's local blend, MasaCtrl's masks): in ``layers``, the
    conditional rows' maps averaged over heads, summed over each row's token positions ``tokens[row]``, summed over
    layers; over the whole run (``per_step=False``) or over the current step only."""

    layers: frozenset[str]
    tokens: dict[int, list[int]]  # conditional batch row -> its token positions
    per_step: bool
    sums: torch.Tensor | None = field(default=None, repr=False)  # (rows, h, w) in the order of ``tokens``
    grid: tuple[int, int] | None = None

    def reset(self) -> None:
        self.sums, self.grid = None, None

    def add(self, maps: torch.Tensor, rows: list[int], grid: tuple[int, int]) -> None:
        """``maps``: (len(rows), queries, text tokens) head-averaged maps of batch rows ``rows``."""
        picked = torch.stack([maps[rows.index(r)][:, self.tokens[r]].sum(-1) for r in self.tokens])
        picked = picked.reshape(len(self.tokens), *grid).float()
        if self.grid is not None and self.grid != grid:
            raise BadInput(f"watched cross-attention layers have different grids ({self.grid} and {grid})",
                           "watch layers of one resolution")
        self.sums = picked if self.sums is None else self.sums + picked
        self.grid = grid

    def rows(self) -> list[int]:
        return list(self.tokens)


class EditControl(StepHooks):
    """The rules, watches, feature injections and latent hooks of one sampling run; pass it to ``sample`` as a
    hook. Two rules may not edit the same layer at the same step."""

    def __init__(self, layout: BatchLayout, rules: list[Rule], num_steps: int, latent_hw: tuple[int, int],
                 watches: list[MapWatch] = (), latent_hooks: list[Callable] = (), features: list["FeatureRule"] = ()):
        self.layout = layout
        self.latent_hw = tuple(latent_hw)
        self.rules = list(rules)
        self.num_steps = num_steps
        self.watches = list(watches)
        self.latent_hooks = list(latent_hooks)
        self.features = list(features)
        self.step: int | None = None
        self._active: dict[str, object] = {}
        self._check_overlaps()
        self._by_layer: dict[str, list[Rule]] = {}
        for rule in self.rules:
            for name in rule.layers:
                self._by_layer.setdefault(name, []).append(rule)
        self._watched = {name: w for w in self.watches for name in w.layers}

    def _check_overlaps(self) -> None:
        for i, a in enumerate(self.rules):
            for b in self.rules[i + 1:]:
                shared = a.layers & b.layers
                steps = set(a.steps.steps(self.num_steps)) & set(b.steps.steps(self.num_steps))
                if shared and steps:
                    raise BadInput(f"{a.method} and {b.method} both edit {a.kind}-attention layer {sorted(shared)[0]} "
                                   f"at step {min(steps)}", "give them layers or steps that do not overlap")

    @property
    def layer_names(self) -> set[str]:
        """Every layer a processor has to sit on: edited or watched."""
        return set(self._by_layer) | set(self._watched)

    def begin_step(self, step: int) -> None:
        self.step = step
        self._active = {name: rule.edit for name, rules in self._by_layer.items() for rule in rules
                        if rule.steps.contains(step, self.num_steps)}
        for watch in self.watches:
            if watch.per_step:
                watch.reset()

    def after_step(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        for hook in self.latent_hooks:
            latents = hook(step, latents)
        return latents

    def end(self) -> None:
        self.step = None
        self._active = {}

    def edit_for(self, layer: AttentionLayer, batch: int):
        """What ``layer`` computes at the current step: a rule's edit, or None (plain attention)."""
        edit = self._active.get(layer.name)
        if edit is not None and batch != self.layout.num_rows:
            raise RuntimeError(f"the UNet batch has {batch} rows but the edit layout has {self.layout.num_rows}; "
                               "run the UNet through freeprompt's sampling loop")
        return edit

    def watch_for(self, layer: AttentionLayer) -> MapWatch | None:
        return self._watched.get(layer.name)

    def masks(self, edit: MaskedMix, layer: AttentionLayer, hidden_states: torch.Tensor):
        """MasaCtrl's masks for ``layer`` at this step: ({target batch row: (source's foreground, its own
        foreground)} as binary maps on the watched grid, the layer's grid), or (None, None) before the step's first
        watched map."""
        watch = edit.watch
        if watch.sums is None:
            return None, None
        flat = watch.sums.flatten(1)
        low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        normed = ((flat - low) / (high - low).clamp_min(1e-12)).reshape(watch.sums.shape)
        foreground = {row: normed[i] >= edit.threshold for i, row in enumerate(watch.rows())}
        masks = {}
        for half in HALVES:
            start = self.layout.offset(half)
            for p in self.layout.targets if start is not None else []:
                source_fg = foreground[self.layout.cond_row(self.layout.sources[p])]
                masks[start + p] = (source_fg, foreground[self.layout.cond_row(p)])
        return masks, layer.grid(self.latent_hw)

    def feature_active(self, feature: "FeatureRule") -> bool:
        return self.step is not None and feature.steps.contains(self.step, self.num_steps)

    def edited_steps(self) -> dict[str, list[int]]:
        """For each rule (by method and kind), the steps it edits."""
        out: dict[str, list[int]] = {}
        for rule in self.rules:
            out.setdefault(f"{rule.method} {rule.kind}", rule.steps.steps(self.num_steps))
        for feature in self.features:
            out.setdefault(f"{feature.method} features", feature.steps.steps(self.num_steps))
        return out


@dataclass(frozen=True)
class FeatureRule:
    """Plug-and-Play's feature injection: in these steps the output of ``module`` (a module path of the UNet) is,
    for every target row, replaced by the output of row ``sources[row]``."""

    module: str
    steps: StepRange
    sources: tuple[int, ...]  # per batch row: the row whose output it takes (itself: unchanged)
    method: str


__all__ = ["BatchLayout", "CrossMapEdit", "DEFAULT_LAYERS", "DEFAULT_SELF_REPLACE", "EditControl", "FeatureRule",
           "MapWatch", "MaskedMix", "RowMix", "Rule"]
