"""Issue #35: the dataset readers of ``freeprompt eval`` fuzzed (hypothesis). Random JSON values and texts as each
format's file, random CSV bytes (byte order marks, latin-1, huge cells, NULs, quotes, stray bytes), random PIE-Bench
mappings and random run-length codes: each either loads (every case usable, every skipped row a short one-line
reason) or is refused with a ``BadInput`` of one line; no other exception. ``TALLY`` counts the outcomes (printed at
the end of the module with ``-s``)."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from freeprompt.errors import BadInput
from freeprompt.evaluation import edit_sets
from support.fuzz import FUZZ

TALLY: collections.Counter = collections.Counter()
NAMES = ["good.png", "dot.png", "text.png", "mask.png", "../outside.png", "/etc/passwd", "link.png", "missing.png",
         "", ".", "..", "sub/../good.png", "a\0b.png", "x" * 300]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An images folder (a good photo, a 1x1 one, a non-image, a mask, a symlink out) and room for the data file."""
    root = tmp_path_factory.mktemp("fuzz")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    Image.new("RGB", (24, 16), (250, 0, 0)).save(images / "good.png")
    Image.new("RGB", (1, 1)).save(images / "dot.png")
    (images / "text.png").write_text("not an image")
    Image.new("L", (24, 16), 255).save(images / "mask.png")
    Image.new("RGB", (24, 16)).save(root / "outside.png")
    (images / "link.png").symlink_to(root / "outside.png")
    yield root
    examples = sum(v for k, v in TALLY.items() if k != "rows skipped")
    print(f"\ndataset fuzz: {examples} examples: " + ", ".join(f"{k} {v}" for k, v in sorted(TALLY.items())))


def _attempt(kind: str, load):
    """Run one load: it returns a usable set, or raises a one-line BadInput; anything else fails the test."""
    try:
        dataset = load()
    except BadInput as err:
        message = str(err)
        assert "\n" not in message and "\r" not in message and err.problem, message
        TALLY[f"{kind} refused"] += 1
        return None
    assert dataset.cases, "load returned a set with no case"
    for case in dataset.cases:
        assert isinstance(case.source, str) and case.source.strip() and case.targets
        assert all(isinstance(t, str) and t.strip() for t in case.targets)
        if case.mask is not None and case.image is not None:
            with Image.open(case.image) as img:
                assert case.mask.shape == (img.height, img.width)
    for reason in dataset.skipped:
        assert isinstance(reason, str) and reason.isprintable() and len(reason) <= 200, reason
    TALLY[f"{kind} loaded"] += 1
    TALLY["rows skipped"] += len(dataset.skipped)
    return dataset


# ------------------------------------------------------------------ random JSON values, as each JSON format

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.sampled_from(NAMES)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=25)


@st.composite
def spoiled(draw, good: dict, fields: dict):
    """A usable row with up to two of its fields dropped or replaced by something else."""
    row = dict(good)
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(sorted(fields)))
        if draw(st.booleans()):
            row.pop(key, None)
        else:
            row[key] = draw(fields[key])
    return row


names = st.sampled_from(NAMES) | scalars
prompts = st.sampled_from(["a red cat", "a blue cat", " ", "[a] [dog]", "x" * 2001]) | scalars
custom_rows = spoiled({"source": "a red cat", "target": "a blue cat", "image": "good.png", "mask": "mask.png"},
                      {"source": prompts, "target": prompts, "image": names, "mask": names, "x": json_values})
paper_rows = spoiled({"soure_prompt": "a red car", "edit_prompt": "a blue car", "image_name": "good.png"},
                     {"soure_prompt": prompts, "source_prompt": prompts, "edit_prompt": prompts, "image_name": names})
rows = st.lists(custom_rows | paper_rows | json_values, max_size=8)
tricky_texts = st.sampled_from(['[{"source": "\\ud800", "target": "b"}]', "[" * 40 + "]" * 40, "[1e999]", "NaN",
                                '[{"source": "a", "target": "b"}] trailing', "\ufeff[]", '"' + "\\\\" * 50, "[" * 5,
                                '{"a": ' * 33 + "0" + "}" * 33, "[" + "1" * 4400 + "]"])


@FUZZ
@given(value=json_values | rows, dataset=st.sampled_from(["custom", "imagenet-fake-edit", "car-real-edit"]))
def test_random_json_values(folder, value, dataset):
    path = folder / "rows.json"
    path.write_text(json.dumps(value))
    _attempt("json", lambda: edit_sets.load(dataset, data=path, images=folder / "images"))


@FUZZ
@given(text=st.text(max_size=200) | tricky_texts, dataset=st.sampled_from(["custom", "imagenet-fake-edit",
                                                                           "pie-bench"]))
def test_random_json_texts(folder, text, dataset):
    path = folder / "text.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _attempt("json text", lambda: edit_sets.load(dataset, data=path, images=folder / "images"))


# ------------------------------------------------------------------ random CSV bytes

cells = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(list('\0",\r\n ')), max_size=12) \
    | st.sampled_from(NAMES + ["a red cat", "a blue cat"])
headers = st.sampled_from([["source", "target"], ["source", "target", "image", "mask"], ["target", "source", "image"],
                           ["source", "target", "image"], ["source"], ["x", "y"], []])


plausible_cells = st.sampled_from(["a red cat", "a blue cat", "good.png", "mask.png", "dot.png", "../outside.png"])


@st.composite
def csv_bytes(draw):
    header = draw(headers)
    width = max(len(header), 1)
    row = st.lists(plausible_cells | plausible_cells | cells, max_size=width + 1)
    body = draw(st.lists(row, min_size=1, max_size=6))
    lines = [header] + body
    text = "\r\n".join(",".join(f'"{c}"' if draw(st.booleans()) else c for c in line) for line in lines)
    huge = draw(st.sampled_from([0, 0, 0, 0, 200_000, 2**20 + 1]))
    if huge:
        text += "\na cat,a " + "x" * huge
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["latin-1", "utf-16"]))
    raw = text.encode(encoding, errors="replace")
    prefix = draw(st.sampled_from([b""] * 6 + [b"\xef\xbb\xbf"] * 3 + [b"\xff\xfe", b"\x00", b"\xc3"]))
    return prefix + raw


@FUZZ
@given(raw=st.one_of(csv_bytes(), csv_bytes(), csv_bytes(), st.binary(max_size=300)))
def test_random_csv_bytes(folder, raw):
    path = folder / "rows.csv"
    path.write_bytes(raw)
    dataset = _attempt("csv", lambda: edit_sets.load("custom", data=path, images=folder / "images"))
    if raw.startswith(b"\xef\xbb\xbf") and dataset is not None:
        assert all("\ufeff" not in case.source for case in dataset.cases)  # the BOM is not part of the first cell


# ------------------------------------------------------------------ random PIE-Bench mappings and run-length codes

rle_numbers = st.integers(-3, 24 * 16 + 3) | st.integers() | st.sampled_from([1.5, True, "7", None])
runs = st.lists(st.tuples(st.integers(0, 24 * 16 - 1), st.integers(0, 30)), max_size=4).map(
    lambda pairs: [v for pair in pairs for v in pair])  # mostly inside a 24x16 image
rle = runs | st.lists(rle_numbers, max_size=8) | json_values
pie_rows = spoiled({"image_path": "good.png", "original_prompt": "a [cat]", "editing_prompt": "a [dog]",
                    "editing_type_id": "1", "blended_word": "cat dog", "mask": [30, 4]},
                   {"image_path": names, "original_prompt": prompts, "editing_prompt": prompts, "mask": rle,
                    "editing_type_id": json_values, "blended_word": json_values})
pie_ids = st.one_of(st.from_regex(r"[0-9]{1,12}", fullmatch=True), st.from_regex(r"[0-9]{1,12}", fullmatch=True),
                    st.sampled_from(["../../x", "a/b", ".hidden", "x" * 200]), st.text(max_size=8))


@FUZZ
@given(mapping=st.dictionaries(pie_ids, pie_rows | json_values, max_size=6), limit=st.sampled_from([None, 1, 2]))
def test_random_pie_bench_mappings(folder, mapping, limit):
    path = folder / "mapping_file.json"
    path.write_text(json.dumps(mapping))
    dataset = _attempt("pie-bench", lambda: edit_sets.load("pie-bench", data=path, images=folder / "images",
                                                           limit=limit))
    if dataset is not None:
        assert len(dataset.cases) <= (limit or len(mapping))
        assert all(case.mask.shape == (16, 24) and case.mask[0].all() for case in dataset.cases)


@FUZZ
@given(code=rle, shape=st.tuples(st.integers(1, 40), st.integers(1, 40)) | st.just((16, 24)))
def test_random_run_length_codes(code, shape):
    try:
        mask = edit_sets.decode_rle(code, shape)
    except BadInput as err:
        assert "\n" not in str(err) and str(err.problem).startswith("mask")
        TALLY["rle refused"] += 1
        return
    assert mask.shape == shape and mask.dtype == np.bool_
    inner = mask[1:-1, 1:-1].sum() if min(shape) > 2 else 0
    assert inner <= sum(code[1::2])  # no run is longer than its code says
    TALLY["rle loaded"] += 1
