"""Derive the CLIP BPE tokenizer from ``bpe_simple_vocab_16e6.txt.gz`` and save it as a tokenizer folder
(tokenizer.json, tokenizer_config.json): the package keeps it once, as the shapes fixture's tokenizer, which
``freeprompt.models.tokenizer.clip_tokenizer()`` reads and plain diffusers loads with the fixture.

That file ships inside PyPI wheels (e.g. open_clip_torch: ``pip download --no-deps open_clip_torch`` and
unzip ``open_clip/bpe_simple_vocab_16e6.txt.gz``). The vocabulary is CLIP's: the 256 byte symbols, the same
with the end-of-word marker, one entry per merge, then the start and end tokens (49,408 in all).

    python -m lab.build_clip_tokenizer path/to/bpe_simple_vocab_16e6.txt.gz src/freeprompt/fixtures/shapes/tokenizer
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

NUM_MERGES = 49152 - 256 - 2


def byte_symbols() -> list[str]:
    """CLIP's reversible byte -> printable character table, in vocabulary order: the bytes that are printable
    characters first (as themselves), then the others mapped to code points from 256 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def derive(bpe_gz: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary (token -> id) and its merges, in priority order, from the BPE file."""
    lines = gzip.open(bpe_gz, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    symbols = byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def build(bpe_gz: Path, out_dir: Path) -> None:
    from freeprompt.models.tokenizer import bpe_tokenizer

    vocab, merges = derive(bpe_gz)
    out_dir.mkdir(parents=True, exist_ok=True)
    bpe_tokenizer(vocab, merges).save_pretrained(str(out_dir))
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {out_dir}")


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
