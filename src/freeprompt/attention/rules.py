"""What an editing method asks of the attention floor, as plain declarations (no torch at import time).

A method (``editing/methods``) turns its options into ``Rule``s: in these layers and these steps, compute attention
this way. A ``RowMix`` makes every row attend with some row's queries, keys and values; a ``CrossMapEdit`` is
Prompt-to-Prompt's edit of materialised cross-attention maps; a ``MaskedMix`` is MasaCtrl's foreground/background
mutual attention. A ``FeatureRule`` swaps a module's output between rows (Plug-and-Play), a ``MapWatch`` asks for
words' cross-attention maps while the run goes (local blend, MasaCtrl's masks), and a ``Blend`` resets targets'
latents outside those words' masks (Prompt-to-Prompt's local blend). ``control.EditControl`` carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .steps import StepRange

if TYPE_CHECKING:
    import torch

HALVES = ("uncond", "cond")


@dataclass(frozen=True)
class BatchLayout:
    """Rows of the UNet batch. Prompts are numbered 0..P-1; ``sources[p]`` is the prompt whose attention prompt
    ``p`` borrows (``p`` itself for a source). With classifier-free guidance the batch is ``[unconditional rows of
    all prompts, conditional rows of all prompts]``, as in diffusers pipelines."""

    sources: tuple[int, ...]
    guidance: bool = True
    absent: frozenset[int] = frozenset()  # prompts whose rows a re-edit leaves out of the UNet batch (``reuse.py``)

    @classmethod
    def one_source(cls, num_targets: int, guidance: bool = True, reused: bool = False) -> BatchLayout:
        """A source (prompt 0) and its targets; ``reused``: the source's rows come from a first edit's
        ``SourceRows``, the UNet batch holds the targets' rows only."""
        return cls(sources=(0,) * (num_targets + 1), guidance=guidance, absent=frozenset({0} if reused else ()))

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

    def place(self, row: int) -> tuple[str, int]:
        """(half, prompt) of a batch row."""
        if not self.guidance:
            return "cond", row
        return ("uncond", row) if row < self.num_prompts else ("cond", row - self.num_prompts)

    def present_rows(self) -> list[int]:
        """The batch rows in the UNet batch, in order: every row but the absent prompts'."""
        return [row for row in range(self.num_rows) if self.place(row)[1] not in self.absent]

    def cond_row(self, prompt: int) -> int:
        start = self.offset("cond")
        assert start is not None  # the conditional half always exists
        return start + prompt

    def mix(self, queries: str = "own", keys: str = "own", values: str = "own",
            halves: tuple[str, ...] = ("cond",)) -> RowMix:
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


@dataclass(frozen=True)
class CrossMapEdit:
    """Prompt-to-Prompt's edit of materialised cross-attention maps, on conditional rows: for target row ``t``
    (source row ``s``) the new map is ``mapped(M_s) * alpha + M_t * (1 - alpha)``, times ``scale`` per token,
    where ``mapped`` gathers the source's token columns ``mapper`` (see ``editing/methods/p2p.py``). One tuple
    per target, one entry per text token."""

    targets: tuple[int, ...]  # conditional batch rows edited
    sources: tuple[int, ...]  # their source rows
    mapper: tuple[tuple[int, ...], ...]  # source token column of each target token
    alpha: tuple[tuple[float, ...], ...]  # 1 where the source's column is used, 0 where the target keeps its own
    scale: tuple[tuple[float, ...], ...]  # P2P's reweighting equalizer (1: unchanged)


@dataclass(eq=False)
class MapWatch:
    """Cross-attention maps a method reads while it runs (P2P's local blend, MasaCtrl's masks): in ``layers``, the
    conditional rows' maps averaged over heads, summed over each row's token positions ``tokens[row]``, summed over
    layers; over the whole run (``per_step=False``) or over the current step only. The edit control fills
    ``sums`` as the run goes: (rows, h, w) in the order of ``tokens``, on the watched layers' ``grid``."""

    layers: frozenset[str]
    tokens: dict[int, list[int]]  # conditional batch row -> its token positions
    per_step: bool
    sums: torch.Tensor | None = field(default=None, repr=False)
    grid: tuple[int, int] | None = None

    def reset(self) -> None:
        self.sums, self.grid = None, None

    def rows(self) -> list[int]:
        return list(self.tokens)


@dataclass(frozen=True, eq=False)
class MaskedMix:
    """MasaCtrl's mutual self-attention with masks from cross-attention maps: target rows attend with their own
    queries to the source's keys and values, once restricted to the source's foreground keys and once to its
    background; the target's foreground takes the first, its background the second. The masks come from the
    current step's maps of ``watch`` (conditional rows); until there are any, it is a plain ``mix``."""

    mix: RowMix
    watch: MapWatch
    threshold: float


@dataclass(frozen=True, eq=False)
class Blend:
    """Prompt-to-Prompt's local blend: after every step in ``steps`` each target's latents outside the union of its
    source's word mask and its own are reset to the source's. The masks are ``watch``'s maps (summed over the steps
    so far), max-pooled 3x3, brought to the latent grid, divided by their maximum and cut at ``threshold``. Without
    a ``watch`` nothing is inside, so each target's latents are reset to its source's everywhere: a shared start
    (FPE's ``--shared-start``), the targets following the source's trajectory over ``steps``."""

    watch: MapWatch | None
    threshold: float
    steps: StepRange


@dataclass(frozen=True)
class JointEdit:
    """An edit of joint attention (MM-DiT: text and image tokens under one softmax) for target rows' image queries,
    ``mode`` "row", "image", "kv" or "text" (see ``joint.py``); ``sources[row]`` is the batch row a row takes from
    (itself: not edited); ``scales`` gives, for a row edited in "text" mode, a value scale per text position
    (Prompt-to-Prompt's reweighting; absent: all 1)."""

    mode: str
    sources: tuple[int, ...]
    scales: tuple[tuple[int, tuple[float, ...]], ...] = ()

    def scale_of(self, row: int) -> torch.Tensor | None:
        import torch

        found = dict(self.scales).get(row)
        return None if found is None else torch.tensor(found)


@dataclass(frozen=True)
class Rule:
    """One decision of a method: in these layers of ``kind`` and these steps, attend with ``edit``."""

    kind: str  # "self" or "cross"
    layers: frozenset[str]
    steps: StepRange
    edit: Any  # RowMix | CrossMapEdit | MaskedMix | JointEdit
    method: str  # who made the rule, for messages


@dataclass(frozen=True)
class FeatureRule:
    """Plug-and-Play's feature injection: in these steps the output of ``module`` (a module path of the UNet) is,
    for every target row, replaced by the output of row ``sources[row]``."""

    module: str
    steps: StepRange
    sources: tuple[int, ...]  # per batch row: the row whose output it takes (itself: unchanged)
    method: str


__all__ = ["BatchLayout", "Blend", "CrossMapEdit", "FeatureRule", "HALVES", "JointEdit", "MapWatch", "MaskedMix",
           "RowMix", "Rule"]
