"""lab/build_clip_tokenizer.py rebuilds the tokenizer folder the package keeps (the shapes fixture's), from a BPE file
laid out as CLIP's ``bpe_simple_vocab_16e6.txt.gz`` (a header line, the merges, more merges CLIP does not use)."""

import gzip
import json


def test_build_reproduces_the_fixture_tokenizer(tmp_path):
    from transformers import CLIPTokenizer

    from freeprompt.models.loading import fixture_path
    from lab.build_clip_tokenizer import build, derive

    folder = fixture_path("shapes") / "tokenizer"
    model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    bpe = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe, "wt", encoding="utf-8") as f:
        f.write("\n".join(["\"bpe_simple_vocab_16e6.txt#version: 0.2", *merges, "q z", "z q"]) + "\n")
    vocab, derived_merges = derive(bpe)
    assert vocab == model["vocab"] and [" ".join(m) for m in derived_merges] == merges
    build(bpe, tmp_path / "tokenizer")
    ours = CLIPTokenizer.from_pretrained(str(tmp_path / "tokenizer"))
    shipped = CLIPTokenizer.from_pretrained(str(folder))
    for text in ("a photo of a cat", "A Red CIRCLE, café 🙂", "it's 3.14 — x²", ""):
        assert ours(text).input_ids == shipped(text).input_ids
    for attr in ("bos_token", "eos_token", "unk_token", "pad_token", "model_max_length"):
        assert getattr(ours, attr) == getattr(shipped, attr), attr
