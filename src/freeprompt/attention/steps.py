"""How a denoising step is counted: the one place that decides whether step i of N is inside a range."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BadInput


@dataclass(frozen=True)
class StepRange:
    """A fraction range ``start:end`` of the denoising steps.

    Step ``i`` (0-based) of ``n`` is inside when ``int(start * n) <= i < int(end * n)``, the rule of the
    official FPE code, so ``0:0.8`` with 50 steps edits steps 0..39.
    """

    start: float
    end: float

    def __post_init__(self):
        if not (0.0 <= self.start <= 1.0 and 0.0 <= self.end <= 1.0):
            raise BadInput(
                f"step range {self.start}:{self.end} is outside [0, 1]",
                "give fractions of the denoising steps, e.g. --self-replace 0:0.8",
            )
        if self.start > self.end:
            raise BadInput(
                f"step range {self.start}:{self.end} starts after it ends",
                "give start <= end, e.g. --self-replace 0:0.8",
            )

    @classmethod
    def parse(cls, spec: str | tuple[float, float] | StepRange) -> StepRange:
        if isinstance(spec, StepRange):
            return spec
        if isinstance(spec, tuple | list):
            return cls(float(spec[0]), float(spec[1]))
        text = str(spec).strip()
        parts = text.split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            start = float(parts[0]) if parts[0].strip() else 0.0
            end = float(parts[1]) if parts[1].strip() else 1.0
        except ValueError:
            raise BadInput(
                f"cannot read step range {text!r}",
                "write it as START:END with fractions in [0, 1], e.g. 0:0.8",
            ) from None
        return cls(start, end)

    def bounds(self, num_steps: int) -> tuple[int, int]:
        return int(self.start * num_steps), int(self.end * num_steps)

    def contains(self, step: int, num_steps: int) -> bool:
        lo, hi = self.bounds(num_steps)
        return lo <= step < hi

    def steps(self, num_steps: int) -> list[int]:
        lo, hi = self.bounds(num_steps)
        return list(range(lo, hi))

    def __str__(self) -> str:
        return f"{self.start:g}:{self.end:g}"
