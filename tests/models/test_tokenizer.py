"""The CLIP BPE tokenizer, stored once: ``clip_tokenizer()`` is built from the shapes fixture's tokenizer.json and
tokenizes exactly as the tokenizer plain diffusers loads from the fixture's folder; it keeps its arguments (context
length, pad token); the package holds no copy of the vocabulary beyond the fixtures' tokenizer folders."""

import json
import random
import string
from pathlib import Path

import pytest

from freeprompt.models.loading import fixture_path
from freeprompt.models.tokenizer import clip_tokenizer

WORDS = ["a", "red", "car", "photo", "of", "the", "Blue", "SQUARE", "don't", "it's", "we'll", "café", "naïve",
         "日本語", "🙂", "🚗💨", "x²", "½", "—", '"quoted"', "3.14159", "1,000", "#tag", "@user",
         "https://example.com/a?b=c", "C++", "<|startoftext|>", "<|endoftext|>", "\t", "\n", "straße", "İstanbul",
         "ﬁne", "Ａ", "e\u0301", "Привет", "...", "a-b_c", "¿qué?"]


def varied_strings(n=300, seed=0):
    """Seeded strings mixing words (case, apostrophes, accents, scripts, emoji, specials, URLs, whitespace) with
    random printable characters; plus empty, blank and over-long ones."""
    rng = random.Random(seed)
    out = ["", " ", "a red circle", "A  Red\tCircle\n", "word " * 100]
    for _ in range(n):
        parts = [rng.choice(WORDS) if rng.random() < 0.7 else
                 "".join(rng.choice(string.printable) for _ in range(rng.randint(1, 8)))
                 for _ in range(rng.randint(1, 12))]
        out.append(rng.choice([" ", "", "  "]).join(parts))
    return out


@pytest.fixture(scope="module")
def fixture_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(fixture_path("shapes") / "tokenizer"))


def test_clip_tokenizer_equals_the_fixture_s_tokenizer(fixture_tokenizer):
    ours = clip_tokenizer()
    assert ours.get_vocab() == fixture_tokenizer.get_vocab() and len(ours) == 49408
    for attr in ("bos_token", "eos_token", "unk_token", "pad_token", "model_max_length", "bos_token_id", "eos_token_id",
                 "pad_token_id"):
        assert getattr(ours, attr) == getattr(fixture_tokenizer, attr), attr
    for text in varied_strings():
        assert ours(text).input_ids == fixture_tokenizer(text).input_ids, text
        padded = {"padding": "max_length", "truncation": True, "max_length": 77}
        assert ours(text, **padded).input_ids == fixture_tokenizer(text, **padded).input_ids, text


def test_clip_tokenizer_gives_clip_s_ids_and_keeps_its_arguments():
    tok = clip_tokenizer()
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]  # CLIP's published ids
    assert (tok.model_max_length, tok.pad_token, tok.pad_token_id) == (77, "<|endoftext|>", 49407)
    long = tok("a red car " * 40, padding="max_length", truncation=True).input_ids
    assert len(long) == 77 and long[0] == 49406 and long[-1] == 49407
    short = clip_tokenizer(max_length=10, pad_token="!")  # SDXL's second tokenizer pads with "!" (id 0)
    assert (short.model_max_length, short.pad_token, short.pad_token_id) == (10, "!", 0)
    assert short("a red car", padding="max_length").input_ids == [49406, 320, 736, 1615, 49407, 0, 0, 0, 0, 0]
    cut = short("a red car and a blue car and more", truncation=True).input_ids
    assert len(cut) == 10 and cut[-1] == 49407


def test_the_vocabulary_is_stored_once_per_tokenizer_folder():
    """The CLIP vocabulary lives only in the model folders plain diffusers loads a tokenizer from: the U-Net
    fixture's tokenizer and the MM-DiT fixture's two CLIP tokenizers (diffusers reads each from its own folder);
    the MM-DiT's third tokenizer is its small byte tokenizer. The package's code builds its tokenizers from the
    first."""
    package = Path(fixture_path("shapes")).parent.parent
    copies = sorted(p.relative_to(package).as_posix() for pattern in ("vocab.json", "merges.txt", "tokenizer.json")
                    for p in package.rglob(pattern))
    mmdit = [f"fixtures/shapes-mmdit/{folder}/tokenizer.json" for folder in ("tokenizer", "tokenizer_2", "tokenizer_3")]
    assert copies == [*mmdit, "fixtures/shapes/tokenizer/tokenizer.json"]
    clip = (package / "fixtures/shapes/tokenizer/tokenizer.json").read_bytes()
    for folder in ("tokenizer", "tokenizer_2"):
        assert json.loads((package / "fixtures/shapes-mmdit" / folder / "tokenizer.json").read_bytes())["model"][
            "vocab"] == json.loads(clip)["model"]["vocab"]
    assert len(json.loads((package / "fixtures/shapes-mmdit/tokenizer_3/tokenizer.json").read_bytes())["model"][
        "vocab"]) == 514
