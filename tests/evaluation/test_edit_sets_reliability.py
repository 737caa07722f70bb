"""Issue #35, the datasets of ``freeprompt eval``: every row checked before the model loads (images decoded, at least
the minimum size, inside the images folder; masks the size of their image; PIE-Bench's run-length code), unusable
rows skipped with a short reason and counted (summary.md, the end of the run), malformed files refused in one line,
--limit bounding the rows checked and the photos rendered. (Bad command lines: tests/support/bad_cli_cases_datasets.py;
random files: test_dataset_fuzz.py.)"""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from freeprompt.errors import BadInput
from freeprompt.evaluation import edit_sets, eval_report


def _one_line_refusal(excinfo, *words):
    message = str(excinfo.value)
    assert isinstance(excinfo.value, BadInput) and "\n" not in message, message
    for word in words:
        assert word.lower() in message.lower(), message
    return message


@pytest.fixture
def photos(tmp_path):
    """An images folder with one good photo, a 1x1 one, a file that is not an image, a truncated PNG, masks of the
    right and a wrong size, and a symlink to a photo outside the folder; a photo outside it."""
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (48, 32), (200, 10, 10)).save(root / "good.png")
    Image.new("RGB", (1, 1)).save(root / "dot.png")
    (root / "text.png").write_text("not an image")
    data = (root / "good.png").read_bytes()
    (root / "cut.png").write_bytes(data[: len(data) // 2])
    mask = np.zeros((32, 48), np.uint8)
    mask[8:24, 10:30] = 255
    Image.fromarray(mask).save(root / "mask.png")
    Image.new("L", (20, 20), 255).save(root / "small_mask.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "outside.png")
    os.symlink(tmp_path / "outside.png", root / "link.png")
    return root


# ------------------------------------------------------------------ 1. rows checked one by one, skipped with a reason

def test_unusable_custom_rows_are_skipped_with_their_reasons(photos, tmp_path):
    rows = [{"source": "a red box", "target": "a blue box", "image": "good.png", "mask": "mask.png"},
            {"source": "a cat", "target": "a dog", "image": "dot.png"},
            {"source": "a cat", "target": "a dog", "image": "text.png"},
            {"source": "a cat", "target": "a dog", "image": "cut.png"},
            {"source": "a cat", "target": "a dog", "image": "/etc/passwd"},
            {"source": "a cat", "target": "a dog", "image": "../outside.png"},
            {"source": "a cat", "target": "a dog", "image": "link.png"},
            {"source": "a red box", "target": "a green box", "image": "good.png", "mask": "small_mask.png"},
            {"source": "a red box", "target": "a pink box", "image": "good.png", "mask": "text.png"},
            {"source": "   ", "target": "a dog", "image": "good.png"},
            {"source": "a cat", "target": ["a dog"]},
            "a cat -> a dog"]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    dataset = edit_sets.load("custom", data=tmp_path / "rows.json", images=photos)
    assert [(c.source, c.targets) for c in dataset.cases] == [("a red box", ["a blue box"])]
    case = dataset.cases[0]
    assert case.image.name == "good.png" and case.mask.shape == (32, 48) and case.mask.sum() == 16 * 20
    reasons = dataset.skipped
    assert len(reasons) == len(rows) - 1 and all("\n" not in r and len(r) <= 200 for r in reasons)
    expected = ["row 1: dot.png is 1x1 pixels", "row 2: text.png is not an image", "row 3: image cut.png",
                "row 4: image /etc/passwd is outside --images", "row 5: image ../outside.png is outside --images",
                "row 6: image link.png is outside --images", ("row 7: mask small_mask.png is 20x20 pixels but its "
                 "image is 48x32"), "row 8: text.png is not an image", "row 9: no source", "row 10: target is not text",
                "row 11: a string, not an object"]
    for reason, start in zip(reasons, expected):
        assert reason.startswith(start), (reason, start)


def test_real_paper_set_rows_are_checked(photos, tmp_path):
    rows = [{"image_name": "good.png", "soure_prompt": "a red car", "edit_prompt": "a blue car"},
            {"image_name": "dot.png", "soure_prompt": "a red car", "edit_prompt": "a blue car"},
            {"image_name": "../outside.png", "soure_prompt": "a red car", "edit_prompt": "a blue car"},
            {"soure_prompt": "a red car", "edit_prompt": "a blue car"},
            {"image_name": "good.png", "soure_prompt": "a red car", "edit_prompt": "a green car"}]
    (tmp_path / "Car_real_edit.json").write_text(json.dumps(rows))
    cars = edit_sets.load("car-real-edit", data=tmp_path / "Car_real_edit.json", images=photos)
    assert len(cars.cases) == 1 and cars.cases[0].targets == ["a blue car", "a green car"]
    assert [r.split(":")[0] for r in cars.skipped] == ["row 1", "row 2", "row 3"]
    assert "outside --images" in cars.skipped[1] and "no image_name" in cars.skipped[2]


def _pie(tmp_path, masks: dict, size=(512, 512)):
    root = tmp_path / "annotation_images"
    root.mkdir(exist_ok=True)
    Image.new("RGB", size).save(root / "a.png")
    mapping = {key: {"image_path": "a.png", "original_prompt": "a [cat]", "editing_prompt": "a [dog]", "mask": mask}
               for key, mask in masks.items()}
    (tmp_path / "mapping_file.json").write_text(json.dumps(mapping))
    return edit_sets.load("pie-bench", data=tmp_path / "mapping_file.json")


def test_malformed_pie_bench_masks_are_skipped_not_whole_or_empty(tmp_path):
    bad = {"neg-length": [0, -1], "text": "1234", "neg-start": [-5, 3], "past-end": [512 * 512 - 2, 5],
           "start-past-end": [10**9, 1], "odd": [1, 2, 3], "float": [1.5, 2], "bool": [True, 1], "nested": [[1, 2]],
           "object": {"start": 1}}
    pie = _pie(tmp_path, {"good": [1030, 3], **bad})
    assert [c.id for c in pie.cases] == ["good"] and pie.cases[0].mask[1:-1, 1:-1].sum() == 3
    assert len(pie.skipped) == len(bad)
    for reason, key in zip(pie.skipped, bad):
        assert reason.startswith(f"row {key}: mask"), reason


def test_pie_bench_masks_follow_their_image_and_ids_are_plain_names(tmp_path):
    pie = _pie(tmp_path, {"wide": [0, 64 * 32], "../../escape": [0, 1]}, size=(64, 32))
    assert [c.id for c in pie.cases] == ["wide"] and pie.cases[0].mask.shape == (32, 64)
    assert pie.cases[0].mask.all()  # every pixel of the 64x32 image: the code fits that image, not 512x512
    assert "not a plain name" in pie.skipped[0]
    with pytest.raises(BadInput) as err:
        _pie(tmp_path, {"past": [0, 64 * 32 + 1]}, size=(64, 32))
    _one_line_refusal(err, "no usable case", "past the 64x32 image")


@pytest.mark.parametrize("code", [[0, -1], "1234", [-5, 3], [262143, 2], [1, 2, 3], [0.0, 1], [False, 1], None])
def test_decode_rle_refuses_malformed_codes(code):
    with pytest.raises(BadInput) as err:
        edit_sets.decode_rle(code, (512, 512))
    _one_line_refusal(err, "mask")


def test_decode_rle_keeps_valid_codes():
    mask = edit_sets.decode_rle([0, 0, 1030, 3, 262143, 1], (512, 512))
    assert mask[2, 6:9].all() and mask[1:-1, 1:-1].sum() == 3 and mask[-1, -1]


def test_a_set_with_no_usable_row_is_refused_in_one_line_naming_file_and_first_reason(photos, tmp_path):
    rows = [{"source": "a cat", "target": "a dog", "image": "../outside.png"}] * 3
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    with pytest.raises(BadInput) as err:
        edit_sets.load("custom", data=tmp_path / "rows.json", images=photos)
    _one_line_refusal(err, "rows.json", "3 rows skipped", "outside --images")


def test_the_skipped_rows_are_in_the_summary_and_one_end_of_run_line(tmp_path):
    skipped = [f"row {n}: image x{n}.png missing" for n in range(25)]
    text = eval_report.write_report(tmp_path, "custom", {}, skipped, [])
    summary = (tmp_path / "summary.md").read_text()
    assert text == summary and "25 dataset rows skipped" in summary and "## Dataset rows skipped (25)" in summary
    assert "row 19: image x19.png missing" in summary and "row 20:" not in summary and "and 5 more" in summary
    assert json.loads((tmp_path / "run.json").read_text())["skipped"] == skipped
    line = eval_report.skipped_line(skipped)
    assert "\n" not in line and line.startswith("skipped 25 dataset rows: first reasons: row 0: image x0.png")
    assert "row 2:" in line and "row 3:" not in line
    assert eval_report.skipped_line(skipped[:1]) == "skipped 1 dataset row: first reasons: row 0: image x0.png missing"


def test_an_eval_run_with_unusable_rows_finishes_and_reports_them(tiny_model_dir, tmp_path, capsys):
    """End to end on the tiny model: the unusable rows neither abort the run nor stop a rerun."""
    from freeprompt.cli.main import main

    rows = [{"source": "a red circle", "target": "a blue circle"},
            {"source": "a red square", "target": "a blue square", "image": "../x.png"},
            {"source": "a red square", "target": "a blue square", "image": "/etc/passwd"}]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    argv = ["eval", "custom", "--data", str(tmp_path / "rows.json"), "--model", str(tiny_model_dir), "--method",
            "plain", "--metrics", "psnr", "--steps", "2", "--out", str(tmp_path / "run"), "--quiet"]
    for _ in range(2):
        main(argv)
        out = capsys.readouterr().out
        assert "skipped 2 dataset rows: first reasons: row 1: image ../x.png is outside the folder of rows.json" in out
    with open(tmp_path / "run" / "items.csv", newline="") as table:
        assert len(list(csv.DictReader(table))) == 1
    assert "## Dataset rows skipped (2)" in (tmp_path / "run" / "summary.md").read_text()


# ------------------------------------------------------------------ 2. malformed files: one line, bounded work

def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


MALFORMED = [
    ("custom", "deep.json", "[" * 50_000 + "]" * 50_000, "levels deep"),
    ("custom", "deep_objects.json", '{"a":' * 40 + "1" + "}" * 40, "levels deep"),
    ("custom", "latin1.csv", "source,target\na café,a thé\n".encode("latin-1"), "not UTF-8"),
    ("custom", "huge.csv", "source,target\na cat," + "x" * (2**20 + 1) + "\n", "cell over"),
    ("custom", "empty.csv", "", "empty"),
    ("custom", "columns.csv", "prompt,edit\na,b\n", "no column source or target"),
    ("custom", "object.json", '{"source": "a", "target": "b"}', "not a list"),
    ("custom", "strings.json", '["a cat", "a dog"]', "list of strings"),
    ("custom", "number.json", "[" + "9" * 5000 + "]", "not valid JSON"),
    ("imagenet-fake-edit", "object.json", '{"soure_prompt": "a", "edit_prompt": "b"}', "not a list"),
    ("imagenet-fake-edit", "strings.json", '["a cat", "a dog"]', "list of strings"),
    ("imagenet-fake-edit", "null.json", "null", "JSON null"),
    ("pie-bench", "list.json", '[{"image_path": "a.png"}]', "not PIE-Bench's mapping"),
    ("pie-bench", "strings.json", '{"000": "a.png"}', "not to objects"),
]


@pytest.mark.parametrize("dataset,name,content,words", MALFORMED, ids=[f"{m[0]}-{m[1]}" for m in MALFORMED])
def test_malformed_files_are_refused_in_one_line_naming_the_file(tmp_path, dataset, name, content, words):
    path = _write(tmp_path, name, content)
    with pytest.raises(BadInput) as err:
        edit_sets.load(dataset, data=path, images=tmp_path)
    _one_line_refusal(err, name, words)
    if "UTF-8" in words:
        assert err.value.fix == "save it as UTF-8"


def test_bom_files_are_read_correctly(tmp_path):
    rows = "source,target\r\na cat,a dog\r\na cat,a fox\r\n"
    dataset = edit_sets.load("custom", data=_write(tmp_path, "bom.csv", b"\xef\xbb\xbf" + rows.encode()))
    assert [(c.source, c.targets) for c in dataset.cases] == [("a cat", ["a dog", "a fox"])] and not dataset.skipped
    as_json = _write(tmp_path, "bom.json", b"\xef\xbb\xbf" + json.dumps([{"source": "a", "target": "b"}]).encode())
    assert edit_sets.load("custom", data=as_json).pairs == 1


def test_a_csv_cell_over_pythons_default_but_inside_the_bound_is_read(tmp_path):
    default = csv.field_size_limit()
    long_source = "a " + "very " * 40_000 + "red cat"  # 200 kB, over csv's default of 128 kB
    path = _write(tmp_path, "long.csv", f"source,target,notes\na cat,a dog,{long_source}\n")
    dataset = edit_sets.load("custom", data=path)
    assert dataset.pairs == 1 and csv.field_size_limit() == default  # the process's limit left as it was


def test_overlong_prompts_are_skipped_not_fed_to_the_run(tmp_path):
    path = _write(tmp_path, "long.csv", "source,target\na cat,a dog\n" + "x" * 3000 + ",a dog\n")
    dataset = edit_sets.load("custom", data=path)
    assert dataset.pairs == 1 and "over 2000" in dataset.skipped[0]


def test_oversized_files_are_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(edit_sets, "MAX_DATA_BYTES", 1000)
    path = _write(tmp_path, "big.json", json.dumps([{"source": "a cat", "target": "a dog"}] * 100))
    with pytest.raises(BadInput) as err:
        edit_sets.load("custom", data=path)
    _one_line_refusal(err, "big.json", "over the limit")


def test_missing_images_folder_and_pie_annotation_folder_are_refused(tmp_path):
    path = _write(tmp_path, "mapping_file.json", json.dumps({"000": {"image_path": "a.png"}}))
    with pytest.raises(BadInput) as err:
        edit_sets.load("pie-bench", data=path)
    _one_line_refusal(err, "annotation_images", "--images")
    with pytest.raises(BadInput) as err:
        edit_sets.load("pie-bench", data=path, images=tmp_path / "nowhere")
    _one_line_refusal(err, "nowhere", "not a folder")


# ------------------------------------------------------------------ 3. --limit bounds what is read and rendered

def test_limit_bounds_the_shapes_photos_rendered(monkeypatch):
    from freeprompt.shapes import world

    rendered = []
    original, reference = world.random_sample, edit_sets.shapes_real_edit(40).cases

    def counted(*args, **kwargs):
        rendered.append(1)
        assert len(rendered) <= 40, "rendered more photos than the set holds"
        return original(*args, **kwargs)

    monkeypatch.setattr(world, "random_sample", counted)
    assert len(edit_sets.load("shapes-real-edit", limit=10_000_000).cases) == 40
    rendered.clear()
    few = edit_sets.load("shapes-real-edit", limit=3)
    assert len(rendered) == 3 and [c.id for c in few.cases] == ["photo-000", "photo-001", "photo-002"]
    assert [c.targets for c in few.cases] == [c.targets for c in reference[:3]]  # the same first photos


def test_limit_bounds_the_rows_checked(photos, tmp_path):
    rows = [{"source": "a red box", "target": "a blue box", "image": "good.png"},
            {"source": "a red box", "target": "a pink box", "image": "good.png", "mask": "mask.png"},
            {"source": "a cat", "target": "a dog", "image": "dot.png"},
            {"source": "a cat", "target": "a fox"}]
    rows += [{"source": f"a cat {n}", "target": "a dog", "image": f"gone{n}.png"} for n in range(500)]
    rows += [{"source": "a red box", "target": "a green box", "image": "good.png"}]  # joins the first case
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    dataset = edit_sets.load("custom", data=tmp_path / "rows.json", images=photos, limit=2)
    assert [(c.source, c.targets) for c in dataset.cases] == [("a red box", ["a blue box", "a pink box",
                                                                            "a green box"]), ("a cat", ["a fox"])]
    assert dataset.skipped == ["row 2: dot.png is 1x1 pixels, smaller than the minimum of 16x16"]  # rows past the
    # limit's cases are neither checked nor counted
    whole = edit_sets.load("custom", data=tmp_path / "rows.json", images=photos)
    assert len(whole.cases) == 2 and len(whole.skipped) == 501


def test_limit_bounds_the_pie_bench_rows_checked(tmp_path):
    masks = {"a": [0, 1], "b": [0, -1], "c": [0, 2]} | {f"z{n}": "bad" for n in range(100)}
    pie = _pie(tmp_path, masks)
    assert len(pie.cases) == 2 and len(pie.skipped) == 101
    limited = edit_sets.load("pie-bench", data=tmp_path / "mapping_file.json", limit=2)
    assert [c.id for c in limited.cases] == ["a", "c"] and len(limited.skipped) == 1
