"""Re-editing a source: ``SourceCache`` keeps, for the last source a pipeline edited, what its targets need from it
(``attention.reuse.SourceRows``: its rows where the edit reads them) and its own result, so that the next
``edit(..., reuse=cache)`` of the same source with the same settings runs only the new targets' rows (about half
the work of a first edit of one target).

    cache = SourceCache()
    first = edit(pipe, "a red car", ["a blue car"], seed=0, reuse=cache)        # keeps the source
    again = edit(pipe, "a red car", ["a green car"], seed=0, reuse=cache)       # runs the green car's rows only
    again.params["source_reused"]  # True

The same source means the same model (the pipeline object), prompt, negative prompt, noise (seed or latents),
steps, guidance, size, sampler and method settings; anything else makes a first edit that replaces what is kept.
A photo's edit (an inversion) is never re-used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch

from ..attention.reuse import DEFAULT_MAX_BYTES, SourceRows


@dataclass
class SourceCache:
    """One source at a time (see the module docstring); at most ``max_bytes`` of kept rows, else a re-edit is not
    offered for that source."""

    max_bytes: int = DEFAULT_MAX_BYTES
    key: str | None = None
    rows: SourceRows | None = None
    image: object | None = None  # the source's decoded image (PIL), None when it was not decoded
    latents: torch.Tensor | None = None  # the source's final latents (1, C, h, w)

    def ready(self, key: str, decode: bool) -> bool:
        """Whether ``key`` is the kept source and what it kept can serve a re-edit."""
        return (self.key == key and self.rows is not None and self.rows.complete and self.latents is not None
                and (self.image is not None or not decode))

    def fresh(self) -> SourceRows:
        """An empty store for a first edit (what was kept before is dropped now)."""
        self.key, self.rows, self.image, self.latents = None, None, None, None
        return SourceRows((0,), self.max_bytes)

    def remember(self, key: str, rows: SourceRows, latents: torch.Tensor, image) -> None:
        self.key, self.rows, self.latents, self.image = key, rows, latents[:1].clone(), image

    @property
    def bytes(self) -> int:
        return self.rows.bytes if self.rows is not None else 0


def source_key(pipe, settings: dict, noise: torch.Tensor) -> str:
    """A digest of everything the source's rows depend on (and the method settings that decide which are kept)."""
    digest = hashlib.sha256(noise.detach().float().cpu().numpy().tobytes()).hexdigest()
    described = {"model": id(pipe), "dtype": str(noise.dtype), "device": str(noise.device), "noise": digest,
                 **settings}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


__all__ = ["SourceCache", "source_key"]
