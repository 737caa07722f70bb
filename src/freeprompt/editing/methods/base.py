"""What every editing method is: options (declared in ``options.py``) that turn, for one batch, into a
``MethodPlan`` of attention rules, watched maps, feature injections and local blends (``attention.rules``), carried
out by the one sampling loop. Nothing here imports torch: a method only decides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ...attention.rules import BatchLayout, Blend, FeatureRule, MapWatch, Rule
from ...attention.tokens import word_token_indices
from ...errors import BadInput
from .options import Options

UNET_FAMILIES = ("sd", "sdxl")
JOINT_FAMILIES = ("sd3", "flux")  # MM-DiT: joint attention over text and image tokens
DIT_FAMILIES = ("pixart", "sd3", "flux")


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
    family: str = "sd"  # sd (SD1.x, SD2.x), sdxl, or a diffusion transformer's: pixart, sd3, flux
    text_tokens: int = 77  # the text sequence the network attends to (its length)
    text_parts: tuple = ()  # ((tokenizer, offset), ...): which tokenizer wrote which part of that sequence

    @property
    def joint(self) -> bool:
        """Whether the network attends over text and image tokens together (MM-DiT: SD3, FLUX)."""
        return self.family in JOINT_FAMILIES

    @property
    def self_kind(self) -> str:
        """The layers where an image token attends to image tokens: ``self``, or ``joint`` on an MM-DiT."""
        return "joint" if self.joint else "self"

    def default(self, value, defaults: dict):
        """``value``, or the model family's default when it is None (a diffusion transformer without its own entry
        takes ``defaults["dit"]``)."""
        if value is not None:
            return value
        return defaults.get(self.family, defaults.get("dit") if self.family in DIT_FAMILIES else defaults["sd"])

    def text_positions(self, prompt: str, word: str) -> list[int]:
        """Where ``word`` sits in the text sequence of ``prompt`` (every occurrence; every part a tokenizer wrote)."""
        parts = self.text_parts or ((self.tokenizer, 0),)
        found: list[int] = []
        for tokenizer, offset in parts:
            found += [offset + p for p in word_token_indices(tokenizer, prompt, word, occurrence=None)]
        return found

    def tail(self, start: int, total: int, kind: str | None = None) -> str:
        """The authors' "from layer ``start`` of ``total`` on" (0-based), as an index range of this model: the same
        share of its layers when it has another count (a distilled or tiny variant, a transformer)."""
        count = len(self.registry.of_kind(kind or self.self_kind))
        first = start if count == total else round(start / total * count)
        return f"{first + 1}-{count}"

    def layers(self, spec, kind: str) -> frozenset[str]:
        """Names of the layers of ``kind`` that ``spec`` (a ``LayerSpec`` or its spelling) selects."""
        chosen = self.registry.select(spec, kind, self.latent_hw)
        return frozenset(layer.name for layer in chosen)

    def quarter_grid_cross_layers(self) -> frozenset[str]:
        """The cross-attention layers two halvings below the latent grid (16x16 at 512 px on SD1.x): where
        Prompt-to-Prompt and MasaCtrl read the maps of words; every cross-attention layer of PixArt (one grid)."""
        cross = self.registry.of_kind("cross")
        if self.family in DIT_FAMILIES:  # one grid: every layer
            return frozenset(layer.name for layer in cross)
        layers = frozenset(layer.name for layer in cross if layer.level == 2)
        if not layers:
            raise BadInput("this model has no cross-attention layers two halvings below the latent grid",
                           "run without word masks (local blend, MasaCtrl's mask)")
        return layers

    def module(self, path: str):
        """The network's submodule at ``path``, or a one-line error naming the path."""
        try:
            return self.unet.get_submodule(path)
        except AttributeError:
            raise BadInput(f"the denoising network has no module {path!r}",
                           "give a module path such as up_blocks.1.resnets.1 (a transformer: "
                           "transformer_blocks.3.ff)") from None


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
