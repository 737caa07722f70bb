"""Attention layers, processors, edit control and the map recorder.

    layers      how a layer is named: descriptors discovered from the UNet, the one layer-spec parser
    steps       how a step range is read: int(a*N) <= i < int(b*N)
    control     which rows, layers and steps are edited (FPE's policy and its defaults)
    processors  where self-attention is replaced: SDPA(Q_src, K_src, V_tgt)
    recorder    maps recorded only in the layers asked for (``record_attention``)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from .control import DEFAULT_LAYERS, DEFAULT_SELF_REPLACE, BatchLayout, EditControl, FPEPolicy
from .layers import AttentionLayer, LayerRegistry, LayerSpec, discover_layers
from .processors import SelfAttentionEditProcessor, installed_processors, shared_map_attention
from .recorder import AttentionRecorder, record_attention, word_token_indices
from .steps import StepRange


@contextmanager
def free_prompt_editing(unet, registry: LayerRegistry, control: EditControl) -> Iterator[EditControl]:
    """Install FPE processors on the policy's self-attention layers; the originals come back on exit."""
    originals = unet.attn_processors
    replacements = {}
    for layer in registry.of_kind("self"):
        if layer.name in control.policy.layers:
            original = originals[layer.processor_key]
            replacements[layer.processor_key] = SelfAttentionEditProcessor(layer, control, original)
    with installed_processors(unet, replacements):
        try:
            yield control
        finally:
            control.end()


__all__ = [
    "AttentionLayer", "AttentionRecorder", "BatchLayout", "DEFAULT_LAYERS", "DEFAULT_SELF_REPLACE", "EditControl",
    "FPEPolicy", "LayerRegistry", "LayerSpec", "SelfAttentionEditProcessor", "StepRange", "discover_layers",
    "free_prompt_editing", "installed_processors", "record_attention", "shared_map_attention", "word_token_indices",
]
