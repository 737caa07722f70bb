"""What every editing method is: options that turn, for one batch, into a ``MethodPlan`` of attention rules,
watched maps, feature injections and latent hooks (``attention.control``), run by the one sampling loop."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

from ...attention import BatchLayout, FeatureRule, LayerRegistry, MapWatch, Rule, StepRange
from ...errors import BadInput
from ...models.loading import unet_family


@dataclass(frozen=True)
class MethodContext:
    """What a method may look at to plan one batch."""

    unet: object
    tokenizer: object
    prompts: tuple[str, ...]  # source first, then the targets
    layout: BatchLayout
    registry: LayerRegistry
    latent_hw: tuple[int, int]
    num_steps: int

    @property
    def family(self) -> str:
        """``sdxl`` for a UNet with SDXL's size/pooled conditioning, else ``sd`` (SD1.x and SD2.x share a layout)."""
        return "sdxl" if unet_family(self.unet) == "sdxl" else "sd"

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
        """Names of the layers of ``kind`` that ``spec`` (a ``LayerSpec`` spelling or indices) selects."""
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


@dataclass
class MethodPlan:
    rules: list[Rule] = field(default_factory=list)
    watches: list[MapWatch] = field(default_factory=list)
    features: list[FeatureRule] = field(default_factory=list)
    latent_hooks: list[Callable] = field(default_factory=list)

    def __add__(self, other: "MethodPlan") -> "MethodPlan":
        return MethodPlan(self.rules + other.rules, self.watches + other.watches, self.features + other.features,
                          self.latent_hooks + other.latent_hooks)


class Method(Protocol):
    name: str

    def plan(self, ctx: MethodContext) -> MethodPlan: ...

    def options(self) -> dict: ...


def steps(spec: str, what: str) -> StepRange:
    """A step range, with the option's name in its error."""
    try:
        return StepRange.parse(spec)
    except BadInput as err:
        raise BadInput(f"{what}: {err.problem}", err.fix) from None


def options_of(method) -> dict:
    """A method's options as run.json records them."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(method).items()}


@dataclass(frozen=True)
class Plain:
    """No edit: every prompt is generated from the shared noise on its own (the baseline of every comparison)."""

    name = "plain"

    def plan(self, ctx: MethodContext) -> MethodPlan:
        return MethodPlan()

    def options(self) -> dict:
        return {}


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
