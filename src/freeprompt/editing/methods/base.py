"""What every editing method is: options (declared in ``options.py``) that turn, for one batch, into a
``MethodPlan`` of attention rules, watched maps, feature injections and local blends (``attention.rules``), carried
out by the one sampling loop. Nothing here imports torch: a method only decides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ...attention.rules import BatchLayout, Blend, FeatureRule, MapWatch, Rule
from ...errors import BadInput
from .options import Options


@dataclass(frozen=True)
class MethodContext:
    """What a method may look at to plan one batch."""

    unet: Any
    tokenizer: Any
    prompts: tuple[str, ...]  # source first, then the targets
    layout: BatchLayout
    registry: Any  # attention.layers.LayerRegistry
    latent_hw: tuple[int, int]
    num_steps: int
    family: str = "sd"  # "sdxl" for a UNet with SDXL's size/pooled conditioning; SD1.x and SD2.x share "sd"

    def default(self, value, defaults: dict):
        """``value``, or the model family's default when it is None."""
        return defaults[self.family] if value is None else value

    def tail(self, start: int, total: int, kind: str = "self") -> str:
        """The authors' "from layer ``start`` of ``total`` on" (0-based), as an index range of this model: the same
        share of its layers when it has another count (a distilled or tiny variant)."""
        count = len(self.registry.of_kind(kind))
        first = start if count == total else round(start / total * count)
        return f"{first + 1}-{count}"

    def layers(self, spec, kind: str) -> frozenset[str]:
        """Names of the layers of ``kind`` that ``spec`` (a ``LayerSpec`` or its spelling) selects."""
        chosen = self.registry.select(spec, kind, self.latent_hw)
        return frozenset(layer.name for layer in chosen)

    def quarter_grid_cross_layers(self) -> frozenset[str]:
        """The cross-attention layers two halvings below the latent grid (16x16 at 512 px on SD1.x): where
        Prompt-to-Prompt and MasaCtrl read the maps of words."""
        layers = frozenset(layer.name for layer in self.registry.of_kind("cross") if layer.level == 2)
        if not layers:
            raise BadInput("this model has no cross-attention layers two halvings below the latent grid",
                           "run without word masks (local blend, MasaCtrl's mask)")
        return layers

    def module(self, path: str):
        """The UNet submodule at ``path``, or a one-line error naming the path."""
        try:
            return self.unet.get_submodule(path)
        except AttributeError:
            raise BadInput(f"the UNet has no module {path!r}",
                           "give a module path such as up_blocks.1.resnets.1") from None


@dataclass
class MethodPlan:
    rules: list[Rule] = field(default_factory=list)
    watches: list[MapWatch] = field(default_factory=list)
    features: list[FeatureRule] = field(default_factory=list)
    blends: list[Blend] = field(default_factory=list)

    def __add__(self, other: MethodPlan) -> MethodPlan:
        return MethodPlan(self.rules + other.rules, self.watches + other.watches, self.features + other.features,
                          self.blends + other.blends)


class Method(Protocol):
    @property
    def name(self) -> str: ...  # read only: a class constant of an Options method, a property of Combined

    def plan(self, ctx: MethodContext) -> MethodPlan: ...

    def options(self) -> dict: ...


@dataclass(frozen=True)
class Plain(Options):
    """No edit: every prompt is generated from the shared noise on its own (the baseline of every comparison)."""

    name = "plain"
    title = "plain"
    summary = "nothing: the target generated from the same noise"

    def plan(self, ctx: MethodContext) -> MethodPlan:
        return MethodPlan()


@dataclass(frozen=True)
class Combined:
    """Several methods in one run (e.g. FPE's self-attention with P2P's cross-attention replacement, the paper's
    ablation); two of them may not edit the same layer at the same step."""

    methods: tuple

    @property
    def name(self) -> str:
        return "+".join(m.name for m in self.methods)

    def plan(self, ctx: MethodContext) -> MethodPlan:
        plan = MethodPlan()
        for method in self.methods:
            plan = plan + method.plan(ctx)
        return plan

    def options(self) -> dict:
        return {m.name: m.options() for m in self.methods}
