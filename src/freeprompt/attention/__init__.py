"""Attention layers, processors, edit control and the map recorder.

    layers      how a layer is named: descriptors discovered from the UNet, the one layer-spec parser
    steps       how a step range is read: int(a*N) <= i < int(b*N)
    control     which rows, layers and steps are edited: rules, watches, feature injections; FPE's defaults
    processors  where attention is replaced: SDPA(Q_src, K_src, V_tgt) and the other methods' attention
    install     the context manager that installs a control on a UNet and always removes it
    recorder    maps recorded only in the layers asked for (``record_attention``)
"""

from .control import (
                      DEFAULT_LAYERS,
                      DEFAULT_SELF_REPLACE,
                      BatchLayout,
                      CrossMapEdit,
                      EditControl,
                      FeatureRule,
                      MapWatch,
                      MaskedMix,
                      RowMix,
                      Rule,
)
from .install import controlled
from .layers import AttentionLayer, LayerRegistry, LayerSpec, discover_layers
from .processors import EditProcessor, installed_processors, mixed_attention
from .recorder import AttentionRecorder, record_attention, word_token_indices
from .steps import StepRange

__all__ = [
    "AttentionLayer", "AttentionRecorder", "BatchLayout", "CrossMapEdit", "DEFAULT_LAYERS", "DEFAULT_SELF_REPLACE",
    "EditControl", "EditProcessor", "FeatureRule", "LayerRegistry", "LayerSpec", "MapWatch", "MaskedMix", "RowMix",
    "Rule", "StepRange", "controlled", "discover_layers", "installed_processors", "mixed_attention",
    "record_attention", "word_token_indices",
]
