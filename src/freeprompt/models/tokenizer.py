"""The CLIP BPE tokenizer, stored once in the package: the shapes fixture's ``tokenizer/tokenizer.json`` (the file
plain diffusers reads when it loads the fixture; lab/build_clip_tokenizer.py derives it)."""

from __future__ import annotations

import json
import tempfile
from importlib import resources
from pathlib import Path


def clip_tokenizer(max_length: int = 77, pad_token: str = "<|endoftext|>"):
    """The real CLIP BPE tokenizer, built offline from the vocabulary and merges of the fixture's tokenizer.json."""
    path = resources.files("freeprompt") / "fixtures" / "shapes" / "tokenizer" / "tokenizer.json"
    model = json.loads(path.read_text(encoding="utf-8"))["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return bpe_tokenizer(model["vocab"], merges, max_length, pad_token)


def bpe_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], max_length: int = 77,
                  pad_token: str = "<|endoftext|>"):
    """A ``CLIPTokenizer`` from a vocabulary (token -> id) and its merges, in priority order."""
    from transformers import CLIPTokenizer

    # transformers 5 builds from in-memory vocab/merges; older versions read files.
    try:
        return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length, pad_token=pad_token)
    except TypeError:
        with tempfile.TemporaryDirectory() as tmp:
            vocab_file, merges_file = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
            vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
            merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
            return CLIPTokenizer(vocab_file=str(vocab_file), merges_file=str(merges_file),
                                 model_max_length=max_length, pad_token=pad_token)
