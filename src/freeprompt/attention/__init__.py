"""Attention layers, processors, edit control and the map recorder. Names load on first use; ``steps``,
``layers``, ``rules`` and ``tokens`` import no torch.

    layers      how a layer is named: descriptors discovered from the UNet, the one layer-spec parser
    steps       how a step range is read: int(a*N) <= i < int(b*N)
    tokens      where a word of a prompt sits among the text encoder's tokens
    rules       what a method asks for: rules, row mixes, watched maps, feature injections, local blends
    control     carrying the rules out during one run (``EditControl``)
    kernels     where attention is replaced: SDPA(Q_src, K_src, V_tgt) and the other methods' attention
    processors  the one processor per layer: computes the edit, shows observers what was computed
    install     the context manager that installs a control on a UNet and always removes it
    recorder    maps recorded only in the layers asked for (``record_attention``)
"""

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .control import EditControl
    from .install import controlled
    from .kernels import Computed, mixed_attention
    from .layers import AttentionLayer, LayerRegistry, LayerSpec, discover_layers
    from .processors import LayerProcessor, attached, installed_processors
    from .recorder import AttentionRecorder, record_attention
    from .rules import BatchLayout, Blend, CrossMapEdit, FeatureRule, MapWatch, MaskedMix, RowMix, Rule
    from .steps import StepRange
    from .tokens import prompt_tokens, word_token_indices

_WHERE = {
    "control": ["EditControl"],
    "install": ["controlled"],
    "layers": ["AttentionLayer", "LayerRegistry", "LayerSpec", "discover_layers"],
    "kernels": ["Computed", "mixed_attention"],
    "processors": ["LayerProcessor", "attached", "installed_processors"],
    "recorder": ["AttentionRecorder", "record_attention"],
    "rules": ["BatchLayout", "Blend", "CrossMapEdit", "FeatureRule", "MapWatch", "MaskedMix", "RowMix", "Rule"],
    "steps": ["StepRange"],
    "tokens": ["prompt_tokens", "word_token_indices"],
}
__all__ = sorted(name for names in _WHERE.values() for name in names)
__getattr__, __dir__ = exports(__name__, {name: module for module, names in _WHERE.items() for name in names})
