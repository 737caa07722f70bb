"""Plug-and-Play (Tumanyan et al., CVPR 2023): the source's features steer the target. In the first
``feature_steps`` the residual-branch output of one decoder ResNet block (``up_blocks.1.resnets.1``: after its
second convolution, before the skip connection is added) of every target row is replaced by the source's; in the
first ``attention_steps`` the self-attention queries and keys of the later decoder layers (9-16 of SD1.x) are the
source's, values the target's own: SDPA(Q_src, K_src, V_tgt). Both halves of guidance take them from the source's
conditional row, as the authors' single source row. Defaults are the authors': 0.8 and 0.5 of the steps. The
authors' code is SD-only; on SDXL the same places are ``up_blocks.0.resnets.1`` (its first decoder block, two
halvings below the latent grid, as SD's ``up_blocks.1``) and the decoder's attention layers after that block's
first (45-70)."""

from __future__ import annotations

from dataclasses import dataclass

from ...attention import FeatureRule, Rule
from ...attention.install import feature_module
from ...errors import BadInput
from .base import MethodContext, MethodPlan, options_of, steps

AUTHORS_FEATURE_BLOCK = {"sd": "up_blocks.1.resnets.1", "sdxl": "up_blocks.0.resnets.1"}
AUTHORS_START = {"sd": (8, 16), "sdxl": (44, 70)}  # 0-based first layer of the Q/K injection: 9-16, 45-70


@dataclass(frozen=True)
class PnP:
    feature_steps: str = "0:0.8"
    attention_steps: str = "0:0.5"
    layers: str | tuple | None = None  # None: the authors' layers (SDXL: the same places)
    feature_block: str | None = None  # None: the authors' block (SDXL: the same place)

    name = "pnp"

    def __post_init__(self):
        steps(self.feature_steps, "PnP's feature steps")
        steps(self.attention_steps, "PnP's attention steps")

    def plan(self, ctx: MethodContext) -> MethodPlan:
        layout = ctx.layout
        mix = layout.mix(queries="source_cond", keys="source_cond", values="own", halves=("uncond", "cond"))
        layers = ctx.layers(self.layers or ctx.tail(*AUTHORS_START[ctx.family]), "self")
        rule = Rule("self", layers, steps(self.attention_steps, "PnP's attention steps"), mix, self.name)
        block = ctx.default(self.feature_block, AUTHORS_FEATURE_BLOCK)
        if not hasattr(feature_module(ctx.unet, block), "conv2"):
            raise BadInput(f"{block} is not a ResNet block (it has no conv2)",
                           f"give a decoder ResNet block, e.g. {AUTHORS_FEATURE_BLOCK[ctx.family]}")
        module = f"{block}.conv2"
        feature = FeatureRule(module, steps(self.feature_steps, "PnP's feature steps"), mix.queries, self.name)
        return MethodPlan(rules=[rule], features=[feature])

    def options(self) -> dict:
        return options_of(self)
