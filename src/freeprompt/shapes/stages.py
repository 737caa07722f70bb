"""The UNet stages of one fixture training run: the from-scratch stage and the refinement stages after it.

A refinement stage restarts the way continued training (``--init-from``) does: the weights restart from their EMA,
with a fresh AdamW, a new warm-up and cosine, and a new EMA warm start. So the lineage that made the shipped
fixture (v4 from scratch, continued as v9, continued as v11) is one command and one process. This module is the one
place that decides which stage a step belongs to, and how a time budget shortens the stages.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import BadInput
from . import world

STAGE_KEYS = ("steps", "lr", "warmup", "swap", "shapes")


@dataclass(frozen=True)
class Stage:
    steps: int
    lr: float
    warmup: int
    swap: float = 0.0  # share of rows with colour-swapped captions (TrainConfig.colour_swap_fraction)
    shapes: str = ""  # shape sampling weights, e.g. "star=3,moon=3" (TrainConfig.shape_weights)


def parse_stages(text: str) -> list[Stage]:
    """"steps=400 lr=1e-4 warmup=20 swap=0.25; steps=400 ..." -> stages. steps is required; lr defaults to 1e-4,
    warmup to 20, swap to 0, shapes to none (the continuations that made v9 and v11)."""
    stages = []
    for number, chunk in enumerate(filter(None, (part.strip() for part in text.split(";"))), start=1):
        fields: dict[str, str] = {}
        for item in chunk.split():
            key, sep, value = item.partition("=")
            if key not in STAGE_KEYS or not sep:
                raise BadInput(f"refinement stage {number}: {item!r} is not one of {'=, '.join(STAGE_KEYS)}=",
                               "write e.g. 'steps=400 lr=1e-4 warmup=20 swap=0.5 shapes=star=3,moon=3'")
            fields[key] = value
        if "steps" not in fields:
            raise BadInput(f"refinement stage {number} has no steps=", "write e.g. 'steps=400 lr=1e-4'")
        try:
            stage = Stage(steps=int(fields["steps"]), lr=float(fields.get("lr", 1e-4)),
                          warmup=int(fields.get("warmup", 20)), swap=float(fields.get("swap", 0.0)),
                          shapes=fields.get("shapes", ""))
        except ValueError:
            raise BadInput(f"refinement stage {number} ({chunk!r}) has a value that is not a number",
                           "steps and warmup take integers, lr and swap numbers") from None
        if stage.steps < 1 or not stage.lr > 0 or stage.warmup < 0:
            raise BadInput(f"refinement stage {number} ({chunk!r}) needs steps >= 1, lr > 0 and warmup >= 0",
                           "write e.g. 'steps=400 lr=1e-4 warmup=20'")
        check_stage(stage)
        stages.append(stage)
    return stages


def parse_shape_weights(text: str) -> dict[str, float]:
    """"star=2,moon=1.5" -> {"star": 2.0, "moon": 1.5}; one-line errors for unknown shapes or bad weights."""
    weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if name not in world.SHAPES:
            raise BadInput(f"unknown shape {name!r} in the shape weights", "use shapes of: " + ", ".join(world.SHAPES))
        try:
            weights[name] = float(value) if sep else float("nan")
        except ValueError:
            weights[name] = float("nan")
        if not weights[name] > 0:
            raise BadInput(f"shape weight {item!r} is not shape=positive number", "write e.g. star=2,moon=2")
    return weights


def format_stages(stages: list[Stage]) -> str:
    """The inverse of parse_stages (the form written to a run's config)."""
    def one(stage: Stage) -> str:
        text = f"steps={stage.steps} lr={stage.lr:g} warmup={stage.warmup}"
        text += f" swap={stage.swap:g}" if stage.swap else ""
        return text + (f" shapes={stage.shapes.replace(' ', '')}" if stage.shapes else "")

    return "; ".join(one(stage) for stage in stages)


def check_stage(stage: Stage) -> None:
    """One-line errors for a stage's colour-swap fraction or shape weights (any stage, the from-scratch one too)."""
    if not 0 <= stage.swap < 1:
        raise BadInput(f"colour swap fraction {stage.swap} is outside [0, 1)", "pass e.g. 0.25, or 0 for off")
    parse_shape_weights(stage.shapes)


class StagePlan:
    """The stages laid end to end on one global step count."""

    def __init__(self, stages: list[Stage]):
        self.stages = list(stages)
        self.starts = [sum(s.steps for s in self.stages[:k]) for k in range(len(self.stages))]
        self.total = sum(s.steps for s in self.stages)

    def index(self, step: int) -> int:
        """The stage that global ``step`` belongs to (the last one for steps past the end)."""
        return max(k for k, start in enumerate(self.starts) if start <= step)

    def fitted(self, total: int) -> StagePlan:
        """Every stage shortened (or lengthened) in proportion so that they add up to ``total``; the first stage
        takes the rounding. Refinement stages keep at least one step."""
        factor = total / self.total
        rest = [replace(s, steps=max(1, round(s.steps * factor))) for s in self.stages[1:]]
        first = replace(self.stages[0], steps=max(1, total - sum(s.steps for s in rest)))
        return StagePlan([first, *rest])

    def truncated(self, total: int) -> StagePlan:
        """The stages cut off after ``total`` steps (a run stopped by its time budget records what it ran)."""
        kept = []
        for stage, start in zip(self.stages, self.starts):
            if start < total:
                kept.append(replace(stage, steps=min(stage.steps, total - start)))
        return StagePlan(kept or [replace(self.stages[0], steps=0)])
