"""Edit policies and the control that the sampling loop drives: which rows, layers and steps are edited.

The sampling loop tells the control the current step explicitly (``begin_step``, as a ``StepHooks``); nothing
here infers the step by counting attention calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..diffusion.sampler import StepHooks
from .layers import AttentionLayer
from .steps import StepRange

# FPE's defaults, as the official code runs it: self-attention layers with at most 32x32 tokens (layers 3-13 of
# SD1.x at 512 px), the first 80 % of the denoising steps.
DEFAULT_LAYERS = "<=32x32"
DEFAULT_SELF_REPLACE = "0:0.8"


@dataclass(frozen=True)
class BatchLayout:
    """Rows of the UNet batch. Prompts are numbered 0..P-1; ``sources[p]`` is the prompt whose self-attention
    map prompt ``p`` takes (``p`` itself for a source). With classifier-free guidance the batch is
    ``[unconditional rows of all prompts, conditional rows of all prompts]``, as in diffusers pipelines."""

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

    def qk_source_rows(self, edit_unconditional: bool) -> list[int]:
        """For each batch row, the row whose queries and keys it attends with."""
        p = self.num_prompts
        if not self.guidance:
            return list(self.sources)
        uncond = list(self.sources) if edit_unconditional else list(range(p))
        return uncond + [p + s for s in self.sources]


@dataclass(frozen=True)
class FPEPolicy:
    """Free-Prompt-Editing: in these self-attention layers and steps, targets use their source's map."""

    layers: frozenset[str]  # layer names (AttentionLayer.name)
    steps: StepRange = field(default_factory=lambda: StepRange.parse(DEFAULT_SELF_REPLACE))
    edit_unconditional: bool = False


class EditControl(StepHooks):
    """Shared state of the installed processors for one sampling run; pass it to ``sample`` as a hook."""

    def __init__(self, layout: BatchLayout, policy: FPEPolicy, num_steps: int):
        self.layout = layout
        self.policy = policy
        self.num_steps = num_steps
        self.step: int | None = None
        self._edit_now = False
        rows = layout.qk_source_rows(policy.edit_unconditional)
        unique = sorted(set(rows))
        self._rows = torch.tensor(unique, dtype=torch.long)
        self._gather = torch.tensor([unique.index(r) for r in rows], dtype=torch.long)
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._has_targets = any(s != p for p, s in enumerate(layout.sources))

    def begin_step(self, step: int) -> None:
        self.step = step
        self._edit_now = self._has_targets and self.policy.steps.contains(step, self.num_steps)

    def end(self) -> None:
        self.step = None
        self._edit_now = False

    def self_attention_plan(self, layer: AttentionLayer, batch: int, device: torch.device):
        """``(qk_rows, qk_gather)`` when this layer is edited at the current step, else None."""
        if not self._edit_now or layer.name not in self.policy.layers:
            return None
        if batch != len(self._gather):
            raise RuntimeError(f"the UNet batch has {batch} rows but the edit layout has {len(self._gather)}; "
                               "run the UNet through freeprompt's sampling loop")
        plan = self._on_device.get(device)
        if plan is None:
            plan = self._on_device[device] = (self._rows.to(device), self._gather.to(device))
        return plan

    def edited_steps(self) -> list[int]:
        return self.policy.steps.steps(self.num_steps) if self._has_targets else []
