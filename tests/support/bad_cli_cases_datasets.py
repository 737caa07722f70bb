"""Bad ``freeprompt eval`` command lines about datasets and metrics (issue #35): malformed dataset files, sets with no
usable row, an empty --metrics. Each is refused before any model is loaded, in one line naming the problem, exit
status 2 (run by tests/cli/test_bad_inputs.py with tests/support/bad_cli_cases.py's table). Besides that table's
placeholders, ``make_files(folder)`` writes the files these rows name: {deepjson} JSON nested 100000 levels,
{latin1csv} a latin-1 CSV, {hugecsv} a CSV with a cell over the field limit, {utf16csv} a UTF-16 CSV, {binarycsv}
bytes that are no text, {emptycsv} an empty CSV, {notargetcsv} a CSV without a target column, {stringsjson} a list of
strings, {customobject} a JSON object, {hugenumber} a number of 5000 digits, {brokenjson} truncated JSON, {pielist}
a PIE-Bench mapping that is a list, {piestrings} a mapping of strings, {pienoimages} a mapping with no
annotation_images beside it, {outsidejson} rows whose images are all outside the images folder, {tinyjson} rows whose
images are all 1x1 pixels, {rlejson} PIE-Bench rows whose masks are all malformed. Each row: (id, argv, a word the
message must contain)."""

import json
from pathlib import Path

EVAL = ["eval", "shapes-fake-edit", "-o", "{out}"]
CUSTOM = ["eval", "custom", "-o", "{out}", "--data"]
PAPER = ["eval", "imagenet-fake-edit", "-o", "{out}", "--data"]
PIE = ["eval", "pie-bench", "-o", "{out}", "--data"]

CASES = [
    # --metrics
    ("eval-metrics-empty", EVAL + ["--metrics", ""], "metrics"),
    ("eval-metrics-commas", EVAL + ["--metrics", ",,"], "metrics"),
    ("eval-metrics-blank", EVAL + ["--metrics", " "], "metrics"),
    # malformed dataset files: bounded work, encoding, top-level type
    ("eval-json-too-deep", CUSTOM + ["{deepjson}"], "deep"),
    ("eval-csv-latin1", CUSTOM + ["{latin1csv}"], "UTF-8"),
    ("eval-csv-utf16", CUSTOM + ["{utf16csv}"], "UTF-8"),
    ("eval-csv-binary", CUSTOM + ["{binarycsv}"], "UTF-8"),
    ("eval-csv-huge-cell", CUSTOM + ["{hugecsv}"], "cell"),
    ("eval-csv-empty", CUSTOM + ["{emptycsv}"], "empty"),
    ("eval-csv-no-target-column", CUSTOM + ["{notargetcsv}"], "target"),
    ("eval-custom-json-object", CUSTOM + ["{customobject}"], "not a list"),
    ("eval-custom-list-of-strings", CUSTOM + ["{stringsjson}"], "objects"),
    ("eval-json-huge-number", CUSTOM + ["{hugenumber}"], "JSON"),
    ("eval-json-truncated", CUSTOM + ["{brokenjson}"], "JSON"),
    ("eval-data-is-a-folder", CUSTOM + ["{emptydir}"], "not a file"),
    ("eval-data-missing", CUSTOM + ["/nonexistent/rows.csv"], "rows.csv"),
    ("eval-paper-set-object", PAPER + ["{emptyjson}"], "not a list"),
    ("eval-paper-set-list-of-strings", PAPER + ["{stringsjson}"], "objects"),
    ("eval-paper-set-too-deep", PAPER + ["{deepjson}"], "deep"),
    ("eval-pie-mapping-is-a-list", PIE + ["{pielist}", "--images", "{emptydir}"], "mapping"),
    ("eval-pie-mapping-of-strings", PIE + ["{piestrings}", "--images", "{emptydir}"], "objects"),
    ("eval-pie-no-annotation-images", PIE + ["{pienoimages}"], "annotation_images"),
    ("eval-images-not-a-folder", ["eval", "car-real-edit", "-o", "{out}", "--data", "{stringsjson}", "--images",
                                  "{file}"], "folder"),
    # every row unusable: refused before the model loads, the first reason named
    ("eval-every-image-outside", CUSTOM + ["{outsidejson}"], "outside"),
    ("eval-every-image-1x1", CUSTOM + ["{tinyjson}"], "1x1"),
    ("eval-every-rle-malformed", PIE + ["{rlejson}"], "mask"),
]


def make_files(folder: Path) -> dict[str, Path]:
    """The files the rows above name, written into ``folder``; returns the placeholders."""
    from PIL import Image

    folder = Path(folder) / "datasets"
    (folder / "pie" / "annotation_images").mkdir(parents=True)
    (folder / "nopie").mkdir()
    Image.new("RGB", (1, 1)).save(folder / "tiny.png")
    Image.new("RGB", (32, 32)).save(folder / "pie" / "annotation_images" / "a.png")
    pie_row = {"image_path": "a.png", "original_prompt": "a [cat]", "editing_prompt": "a [dog]"}
    texts = {
        "deepjson": ("deep.json", "[" * 100_000 + "]" * 100_000),
        "latin1csv": ("latin1.csv", "source,target\na café,a thé\n".encode("latin-1")),
        "utf16csv": ("utf16.csv", "source,target\na cat,a dog\n".encode("utf-16")),
        "binarycsv": ("binary.csv", bytes(range(256)) * 4),
        "hugecsv": ("huge.csv", "source,target\na cat," + "x" * (2**20 + 10) + "\n"),
        "emptycsv": ("empty.csv", ""),
        "notargetcsv": ("notarget.csv", "source,goal\na cat,a dog\n"),
        "customobject": ("object.json", json.dumps({"source": "a cat", "target": "a dog"})),
        "stringsjson": ("strings.json", json.dumps(["a red car", "a blue car"])),
        "hugenumber": ("number.json", "[" + "7" * 5000 + "]"),
        "brokenjson": ("broken.json", '[{"source": "a cat", "tar'),
        "pielist": ("pie_list.json", json.dumps([pie_row])),
        "piestrings": ("pie_strings.json", json.dumps({"000": "a.png"})),
        "pienoimages": ("nopie/mapping_file.json", json.dumps({"000": pie_row})),
        "outsidejson": ("outside.json", json.dumps([{"source": "a cat", "target": "a dog", "image": "../x.png"},
                                                    {"source": "a cat", "target": "a fox", "image": "/etc/passwd"}])),
        "tinyjson": ("tiny.json", json.dumps([{"source": "a cat", "target": "a dog", "image": "tiny.png"}])),
        "rlejson": ("pie/mapping_file.json", json.dumps({"000": {**pie_row, "mask": [0, -1]},
                                                         "001": {**pie_row, "mask": "1234"},
                                                         "002": {**pie_row, "mask": [0, 10**9]}})),
    }
    places = {}
    for key, (name, content) in texts.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        places[key] = path
    return places
