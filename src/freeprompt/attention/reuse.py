"""Re-editing a source at half the cost: what the source's rows computed where the edit reads them, kept during a
first edit and given back during a re-edit that runs only the new targets' rows.

The source's own rows are never edited, so everything they compute depends on the source alone (model, prompt,
noise, steps, guidance, sampler), not on the targets. An edit reads them in a few places only: the attention layers
it edits or watches at the steps it does (their inputs: hidden states, text, and time embedding, as the layer's
processor receives them), a feature injection's module output (Plug-and-Play), and the latents after each step (a
local blend). During the first edit ``SourceRows`` keeps those rows (``keep``); during a re-edit the UNet batch holds
only the targets' rows, and wherever the edit reads the source the kept rows are put back in place (``logical``):
the edit's own code then runs on the whole batch, as in the first edit, and only the targets' outputs go on
(``physical``). Rows nothing reads are filled with zeros; their outputs are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..errors import BadInput
from .rules import BatchLayout, CrossMapEdit, MapWatch, MaskedMix, RowMix

DEFAULT_MAX_BYTES = 4 * 2**30


class SourceRows:
    """The kept rows of the prompts a re-edit leaves out (``prompts``: the source, 0), by place: an attention layer
    at a step, a feature module at a step, the latents after a step. At most ``max_bytes``: past that nothing more
    is kept and the store says it cannot serve a re-edit (``complete`` False)."""

    def __init__(self, prompts: Iterable[int] = (0,), max_bytes: int = DEFAULT_MAX_BYTES):
        self.prompts = frozenset(prompts)
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.complete = True
        self.store: dict[tuple, dict[tuple[str, int], tuple]] = {}

    def keep(self, place: tuple, layout: BatchLayout, tensors: tuple, rows: Iterable[int]) -> None:
        """Keep ``rows`` (batch rows of ``layout``, of the left-out prompts) of each tensor (None stays None)."""
        if not self.complete:
            return
        kept = {}
        for row in rows:
            half, prompt = layout.place(row)
            if prompt in self.prompts:
                kept[(half, prompt)] = tuple(None if t is None else t[row].detach().clone() for t in tensors)
        size = sum(t.numel() * t.element_size() for parts in kept.values() for t in parts if t is not None)
        if self.bytes + size > self.max_bytes:
            self.complete, self.store, self.bytes = False, {}, 0
            return
        self.store.setdefault(place, {}).update(kept)
        self.bytes += size

    def logical(self, place: tuple, layout: BatchLayout, tensors: tuple) -> tuple:
        """Each tensor of the physical batch (the present rows of ``layout``) as the whole batch: kept rows put
        back where they belong, zeros where nothing was kept."""
        kept = self.store.get(place, {})
        present = layout.present_rows()
        out: list[torch.Tensor | None] = []
        for i, tensor in enumerate(tensors):
            if tensor is None:
                out.append(None)
                continue
            rows = []
            for row in range(layout.num_rows):
                if row in present:
                    rows.append(tensor[present.index(row)])
                else:
                    parts = kept.get(layout.place(row))
                    rows.append(parts[i].to(tensor) if parts is not None else torch.zeros_like(tensor[0]))
            out.append(torch.stack(rows))
        return tuple(out)


def physical(layout: BatchLayout, tensor: torch.Tensor) -> torch.Tensor:
    """The rows of a whole-batch tensor that are in the UNet batch of a re-edit."""
    return tensor.index_select(0, torch.tensor(layout.present_rows(), device=tensor.device))


def read_rows(edit, watch: MapWatch | None) -> set[int]:
    """The batch rows an edit (and a watch) of one layer reads: whose queries, keys, values or maps it uses."""
    rows: set[int] = set(watch.rows()) if watch is not None else set()
    if isinstance(edit, MaskedMix):
        rows |= read_rows(edit.mix, edit.watch)
    elif isinstance(edit, RowMix):
        rows |= set(edit.queries) | set(edit.keys) | set(edit.values)
    elif isinstance(edit, CrossMapEdit):
        rows |= set(edit.sources)
    return rows


def check_plain(attention_mask, observers) -> None:
    """What a re-edit cannot serve: an attention mask over the batch, or a recorder watching (it would see the
    kept rows of edited layers and not of the others)."""
    if attention_mask is not None:
        raise BadInput("a re-edit cannot run with an attention mask", "run the full edit (without the source cache)")
    if observers:
        raise BadInput("attention cannot be recorded during a re-edit", "record during the first edit, or run the "
                       "full edit (without the source cache)")


__all__ = ["DEFAULT_MAX_BYTES", "SourceRows", "check_plain", "physical", "read_rows"]
