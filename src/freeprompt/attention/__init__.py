"""Attention layers, processors and edit policies."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from .control import BatchLayout, EditControl, FPEPolicy
from .layers import AttentionLayer, LayerRegistry, discover_layers
from .processors import SelfAttentionEditProcessor, installed_processors, shared_map_attention
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
    "AttentionLayer", "BatchLayout", "EditControl", "FPEPolicy", "LayerRegistry", "SelfAttentionEditProcessor",
    "StepRange", "discover_layers", "free_prompt_editing", "installed_processors", "shared_map_attention",
]
