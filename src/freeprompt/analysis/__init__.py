"""Probing analysis (paper section 7.1): record attention maps, store datasets, train probes, write reports.

    recorder   record_attention / word_token_indices: maps of chosen layers during generation
    words      vocabularies (the paper's word lists, the shapes fixture world)
    datasets   dataset specs (builders), sharded resumable collection, lazy loading
    probes     the authors' classifier, a linear control, in- and out-of-distribution protocols
    report     CSV / Markdown tables, heatmaps and mean-map grids

    from freeprompt.analysis import record_attention, word_token_indices
    with record_attention(pipe, kind="cross", tokens=[word_token_indices(pipe.tokenizer, "a red car", "red")]) as rec:
        pipe("a red car", num_inference_steps=50)
    maps = rec.maps()        # {layer name: (1, h, w)}, averaged over heads and steps, conditional branch
"""

from .datasets import CollectOptions, DatasetSpec, build_spec, collect, open_dataset
from .probes import ProbeConfig, run_probes
from .recorder import AttentionRecorder, pool_factors, prompt_tokens, record_attention, word_token_indices
from .report import write_report
from .words import Vocabulary, get_vocabulary

__all__ = ["AttentionRecorder", "CollectOptions", "DatasetSpec", "ProbeConfig", "Vocabulary", "build_spec", "collect",
           "get_vocabulary", "open_dataset", "pool_factors", "prompt_tokens", "record_attention", "run_probes",
           "word_token_indices", "write_report"]
