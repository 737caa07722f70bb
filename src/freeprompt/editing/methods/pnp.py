"""Plug-and-Play (Tumanyan et al., CVPR 2023): the source's features steer the target. In the first
``feature_steps`` the residual-branch output of one decoder ResNet block (``up_blocks.1.resnets.1``: after its
second convolution, before the skip connection is added) of every target row is replaced by the source's; in the
first ``attention_steps`` the self-attention queries and keys of the later decoder layers (9-16 of SD1.x) are the
source's, values the target's own: SDPA(Q_src, K_src, V_tgt). Both halves of guidance take them from the source's
conditional row, as the authors' single source row. Defaults are the authors': 0.8 and 0.5 of the steps."""

from __future__ import annotations

from dataclasses import dataclass

from ...attention import FeatureRule, Rule
from ...attention.install import feature_module
from ...errors import BadInput
from .base import MethodContext, MethodPlan, options_of, steps

AUTHORS_FEATURE_BLOCK = "up_blocks.1.resnets.1"
AUTHORS_LAYERS = "9-16"


@dataclass(frozen=True)
class PnP:
    feature_steps: str = "0:0.8"
    attention_steps: str = "0:0.5"
    layers: str | tuple = AUTHORS_LAYERS
    feature_block: str = AUTHORS_FEATURE_BLOCK

    name = "pnp"

    def __post_init__(self):
        steps(self.feature_steps, "PnP's feature steps")
        steps(self.attention_steps, "PnP's attention steps")

    def plan(self, ctx: MethodContext) -> MethodPlan:
        layout = ctx.layout
        mix = layout.mix(queries="source_cond", keys="source_cond", values="own", halves=("uncond", "cond"))
        rule = Rule("self", ctx.layers(self.layers, "self"), steps(self.attention_steps, "PnP's attention steps"), mix,
                    self.name)
        module = f"{self.feature_block}.conv2"
        if not hasattr(feature_module(ctx.unet, self.feature_block), "conv2"):
            raise BadInput(f"{self.feature_block} is not a ResNet block (it has no conv2)",
                           f"give a decoder ResNet block, e.g. {AUTHORS_FEATURE_BLOCK}")
        feature = FeatureRule(module, steps(self.feature_steps, "PnP's feature steps"), mix.queries, self.name)
        return MethodPlan(rules=[rule], features=[feature])

    def options(self) -> dict:
        return options_of(self)
