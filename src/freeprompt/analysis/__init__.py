"""Probing analysis (paper section 7.1): attention-map datasets, probes, tables and plots.

    words      vocabularies (the paper's word lists, the shapes fixture world)
    specs      what a dataset holds (prompt families, classes, seeds, recorded words)
    datasets   how a dataset is stored on disk and read back lazily
    collect    sharded, resumable collection with the attention recorder (``freeprompt.attention.recorder``)
    probes     the authors' classifier, a linear control, in- and out-of-distribution protocols
    report     CSV / Markdown tables, heatmaps and mean-map grids
    protocol   the whole protocol from one config (``freeprompt probe run``)

    from freeprompt.analysis import record_attention, word_token_indices
    with record_attention(pipe, kind="cross", tokens=[word_token_indices(pipe.tokenizer, "a red car", "red")]) as rec:
        pipe("a red car", num_inference_steps=50)
    maps = rec.maps()        # {layer name: (1, h, w)}, averaged over heads and steps, conditional branch
"""

from ..attention.recorder import AttentionRecorder, pool_factors, record_attention
from ..attention.tokens import prompt_tokens, word_token_indices
from .collect import CollectOptions, collect
from .datasets import open_dataset
from .probes import ProbeConfig, run_probes
from .report import write_report
from .specs import DatasetSpec, build_spec
from .words import Vocabulary, get_vocabulary

__all__ = ["AttentionRecorder", "CollectOptions", "DatasetSpec", "ProbeConfig", "Vocabulary", "build_spec", "collect",
           "get_vocabulary", "open_dataset", "pool_factors", "prompt_tokens", "record_attention", "run_probes",
           "word_token_indices", "write_report"]
