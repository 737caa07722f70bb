"""The CLIP BPE tokenizer shipped with the package (derived by lab/build_clip_tokenizer.py)."""

from __future__ import annotations

import json
from importlib import resources


def clip_tokenizer(max_length: int = 77, pad_token: str = "<|endoftext|>"):
    """The real CLIP BPE tokenizer, built offline from the package's vocab.json and merges.txt."""
    from transformers import CLIPTokenizer

    folder = resources.files("freeprompt") / "assets" / "clip_tokenizer"
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")[1:]
    merges = [tuple(line.split()) for line in lines if line]
    # transformers 5 builds from in-memory vocab/merges; older versions read files.
    try:
        tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length, pad_token=pad_token)
    except TypeError:
        tok = CLIPTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
                            model_max_length=max_length, pad_token=pad_token)
    return tok
