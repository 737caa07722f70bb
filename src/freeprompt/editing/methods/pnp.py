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

from ...attention.layers import LayerSpec
from ...attention.rules import FeatureRule, JointEdit, Rule
from ...attention.steps import StepRange
from ...errors import BadInput
from .base import DIT_FAMILIES, MethodContext, MethodPlan
from .options import LAYERS, STEPS, TEXT, Options, option

RELEASE = "pnp-diffusers (MichalGeyer/pnp-diffusers), pnp.py"
AUTHORS_FEATURE_BLOCK = {"sd": "up_blocks.1.resnets.1", "sdxl": "up_blocks.0.resnets.1", "dit": None}
AUTHORS_START = {"sd": (8, 16), "sdxl": (44, 70)}  # 0-based first layer of the Q/K injection: 9-16, 45-70


@dataclass(frozen=True)
class PnP(Options):
    feature_steps: StepRange = option(
        "0:0.8", kind=STEPS, flag="--pnp-feature-steps", label="feature steps",
        help="fraction range of the steps with the feature injection", source=f"{RELEASE}: pnp_f_t=0.8")
    attention_steps: StepRange = option(
        "0:0.5", kind=STEPS, flag="--pnp-attention-steps", label="attention steps",
        help="fraction range of the steps with the query/key injection", source=f"{RELEASE}: pnp_attn_t=0.5")
    layers: LayerSpec | None = option(
        None, kind=LAYERS, flag="--pnp-layers", label="layers", default_text="9-16; SDXL 45-70",
        help="self-attention layers of the query/key injection",
        source=f"{RELEASE}: the attentions of up_blocks 1 (from the second), 2 and 3")
    feature_block: str | None = option(
        None, kind=TEXT, flag="--pnp-feature-block", label="feature block",
        default_text="up_blocks.1.resnets.1; SDXL up_blocks.0.resnets.1",
        help="the decoder ResNet block whose features are injected", source=f"{RELEASE}: up_blocks[1].resnets[1]")

    name = "pnp"
    title = "PnP"
    reference = "Tumanyan et al., CVPR 2023"
    summary = ("the residual-branch features of one decoder ResNet block and the self-attention queries and keys of "
               "later decoder layers, both halves")

    def plan(self, ctx: MethodContext) -> MethodPlan:
        layout = ctx.layout
        mix = layout.mix(queries="source_cond", keys="source_cond", values="own", halves=("uncond", "cond"))
        start = AUTHORS_START.get(ctx.family, AUTHORS_START["sd"])
        layers = ctx.layers(self.layers or ctx.tail(*start), ctx.self_kind)
        edit = JointEdit("row", mix.queries) if ctx.joint else mix
        rule = Rule(ctx.self_kind, layers, self.attention_steps, edit, self.name)
        feature = FeatureRule(self._feature_module(ctx), self.feature_steps, mix.queries, self.name)
        return MethodPlan(rules=[rule], features=[feature])

    def _feature_module(self, ctx: MethodContext) -> str:
        """The module whose output is injected: a UNet's decoder ResNet block's second convolution (before the skip
        connection is added), or a transformer block's feed-forward output (an adaptation: DiTs have no decoder)."""
        block = ctx.default(self.feature_block, AUTHORS_FEATURE_BLOCK) or transformer_block(ctx)
        if ctx.family in DIT_FAMILIES:
            return block
        if not hasattr(ctx.module(block), "conv2"):
            raise BadInput(f"{block} is not a ResNet block (it has no conv2)",
                           f"give a decoder ResNet block, e.g. {AUTHORS_FEATURE_BLOCK[ctx.family]}")
        return f"{block}.conv2"


def transformer_block(ctx: MethodContext) -> str:
    """A diffusion transformer's feature module for Plug-and-Play: the feed-forward of the block a third of the way
    in (PnP's decoder block sits about there in SD's forward order)."""
    path = f"transformer_blocks.{len(ctx.unet.transformer_blocks) // 3}.ff"
    ctx.module(path)
    return path
