"""``freeprompt score`` (edits made by any tool, scored with eval's metrics and tables) and ``eval --protocol``:
the same numbers as eval on the same edits, PIE-Bench's layout at the photo's own size, a CSV mapping, missing and
unreadable edits skipped and counted, protocols recorded so a resumed run cannot mix them, folders from before
protocols resumed or refused in one line."""

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from freeprompt.errors import BadInput
from freeprompt.evaluation import edit_sets, metrics, runner

PIXELS = "psnr,mse,ssim"


def rows_of(folder):
    with open(folder / "items.csv", newline="") as f:
        return list(csv.DictReader(f))


def refused(main, argv, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    return err


def test_score_gives_eval_s_numbers_on_eval_s_saved_edits(tiny_model_dir, tiny_clip_dir, tmp_path, monkeypatch,
                                                          capsys):
    from freeprompt.cli.main import main

    monkeypatch.setenv("FREEPROMPT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "eval"
    argv = ["eval", "shapes-real-edit", "--model", str(tiny_model_dir), "--limit", "1", "--clip", str(tiny_clip_dir),
            "--metrics", "clip,cds,clip_edited,psnr,mse,ssim,oracle", "--steps", "2", "--guidance", "3",
            "--method", "fpe,plain", "--save-edits", "--out", str(out), "--quiet"]
    main(argv)
    assert json.loads((out / "settings.json").read_text())["protocol"] == "pie-bench"  # a masked set's default
    summary = (out / "summary.md").read_text()
    assert "Protocol: pie-bench" in summary and "outside the object" in summary and (out / "examples.png").exists()
    assert sorted(p.name for p in (out / "edits" / "fpe" / "photo-000").iterdir()) == [
        "source.png", "target_1.png", "target_2.png", "target_3.png"]
    scored = tmp_path / "scored"
    main(["score", "shapes-real-edit", "--edits", str(out / "edits" / "fpe"), "--edits", f"plain={out}/edits/plain",
          "--limit", "1", "--clip", str(tiny_clip_dir), "--metrics", "clip,cds,clip_edited,psnr,mse,ssim,oracle",
          "--out", str(scored), "--quiet"])
    columns = ["clip_score", "clip_directional", "clip_edited", "psnr_outside", "mse_outside", "ssim_outside", "joint"]
    assert [[r[c] for c in columns] for r in rows_of(scored)] == [[r[c] for c in columns] for r in rows_of(out)]
    # the protocol is part of the settings: a resumed run cannot mix protocols
    err = refused(main, [*argv, "--protocol", "clean"], capsys)
    assert "other settings (protocol)" in err
    clean = tmp_path / "clean"
    main(["score", "shapes-real-edit", "--edits", str(out / "edits" / "fpe"), "--limit", "1", "--metrics", PIXELS,
          "--protocol", "clean", "--out", str(clean), "--quiet"])
    assert "Protocol: clean" in (clean / "summary.md").read_text()
    assert json.loads((clean / "settings.json").read_text())["protocol"] == "clean"


def pie_bench_set(tmp_path):
    """A one-image PIE-Bench: a 512 px photo under a nested category folder, its mask as run-length code."""
    root = tmp_path / "PIE"
    folder = root / "annotation_images" / "1_change_object_80" / "1_animal"
    folder.mkdir(parents=True)
    photo = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    Image.fromarray(photo).save(folder / "111.jpg", quality=95)
    mapping = {"111": {"image_path": "1_change_object_80/1_animal/111.jpg", "original_prompt": "a [cat]",
                       "editing_prompt": "a [dog]", "editing_type_id": "1", "mask": [512 * 100 + 100, 200]}}
    (root / "mapping_file.json").write_text(json.dumps(mapping))
    return root


def test_score_reads_pie_bench_s_layout_and_scores_at_the_photo_s_512_px(tmp_path, capsys):
    from freeprompt.cli.main import main

    root = pie_bench_set(tmp_path)
    edits = tmp_path / "mytool" / "annotation_images" / "1_change_object_80" / "1_animal"
    edits.mkdir(parents=True)
    edit = Image.fromarray(np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    edit.save(edits / "111.png")  # another tool's size and format
    out = tmp_path / "scored"
    main(["score", "pie-bench", "--data", str(root / "mapping_file.json"), "--edits", str(tmp_path / "mytool"),
          "--metrics", PIXELS, "--out", str(out), "--quiet"])
    (row,) = rows_of(out)
    case = edit_sets.load("pie-bench", data=root / "mapping_file.json").cases[0]
    photo = np.asarray(Image.open(case.image).convert("RGB"))
    resized = np.asarray(edit.resize((512, 512), Image.BICUBIC))
    assert row["method"] == "mytool" and float(row["psnr_outside"]) == pytest.approx(
        metrics.psnr(photo, resized, case.mask, protocol="pie-bench"), rel=1e-5)
    summary = (out / "summary.md").read_text()
    assert "512x512" in summary and "outside the edit mask" in summary and "Protocol: pie-bench" in summary


def test_score_with_a_csv_mapping_skips_and_counts_missing_and_unreadable_edits(tmp_path, capsys):
    from freeprompt.cli.main import main

    rows = [{"source": "a red circle", "target": t} for t in ("a blue circle", "a green circle", "a gray circle")]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    tool = tmp_path / "tool"
    tool.mkdir()
    rng = np.random.default_rng(2)
    for name in ("src.png", "one.png"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tool / name)
    (tool / "two.png").write_bytes(b"not an image")
    with open(tmp_path / "map.csv", "w", newline="") as f:
        csv.writer(f).writerows([["case", "target", "edit"], ["00000", 0, "src.png"], ["00000", 1, "one.png"],
                                 ["00000", 2, "two.png"]])
    out = tmp_path / "scored"
    main(["score", "custom", "--data", str(tmp_path / "rows.json"), "--edits", str(tool), "--mapping",
          str(tmp_path / "map.csv"), "--metrics", PIXELS, "--out", str(out), "--quiet"])
    (row,) = rows_of(out)
    assert row["target_prompt"] == "a blue circle" and row["psnr_outside"]
    text = capsys.readouterr().out
    assert "skipped 2 edited images" in text and "cannot be decoded" in text
    summary = (out / "summary.md").read_text()
    assert "## Edited images missing or unreadable (2)" in summary and "whole image" in summary
    assert "Protocol: clean" in summary  # no masks: clean by default


def test_score_refuses_bad_calls_in_one_line(tmp_path, capsys):
    from freeprompt.cli.main import main

    base = ["score", "shapes-real-edit", "--limit", "1", "--metrics", PIXELS, "--out", str(tmp_path / "o")]
    assert "does not exist" in refused(main, [*base, "--edits", str(tmp_path / "nowhere")], capsys)
    (tmp_path / "empty").mkdir()
    assert "no edited image" in refused(main, [*base, "--edits", str(tmp_path / "empty")], capsys)
    assert "unknown protocol" in refused(main, [*base, "--edits", str(tmp_path / "empty"), "--protocol", "x"],
                                         capsys)
    (tmp_path / "bad.csv").write_text("case,edit\n")
    assert "no column target" in refused(main, [*base, "--edits", str(tmp_path / "empty"), "--mapping",
                                                str(tmp_path / "bad.csv")], capsys)


def legacy_folder(tmp_path, dataset: str, metrics_: list[str], name: str = "legacy"):
    """An eval folder written before --protocol existed: its settings.json names no protocol."""
    folder = tmp_path / f"{name}-{dataset}"
    folder.mkdir()
    settings = {"dataset": dataset, "metrics": metrics_, "cases": 1, "seed": 0}
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "items.csv").write_text("case,method\n")
    return folder, settings


def test_folders_from_before_protocols_resume_as_clean_or_are_refused(tmp_path):
    real = edit_sets.load("shapes-real-edit", limit=1)
    folder, settings = legacy_folder(tmp_path, "shapes-real-edit", ["clip", "psnr", "ssim"])
    with pytest.raises(BadInput, match="add --protocol clean"):
        runner.adopt_legacy(folder, {**settings, "protocol": "pie-bench"}, real)
    runner.adopt_legacy(folder, {**settings, "protocol": "clean"}, real)
    assert json.loads((folder / "settings.json").read_text()) == {**settings, "protocol": "clean"}
    fake = edit_sets.load("shapes-fake-edit", limit=1)
    folder, settings = legacy_folder(tmp_path, "shapes-fake-edit", ["clip", "psnr"])
    with pytest.raises(BadInput, match="over the whole image") as err:
        runner.adopt_legacy(folder, {**settings, "protocol": "clean"}, fake)
    assert "\n" not in str(err.value)
    folder, settings = legacy_folder(tmp_path, "shapes-fake-edit", ["clip", "cds"], "clip-only")
    runner.adopt_legacy(folder, {**settings, "protocol": "clean"}, fake)  # CLIP only: computed as clean computes
    assert json.loads((folder / "settings.json").read_text())["protocol"] == "clean"


def test_default_protocols_and_regions():
    assert runner.default_protocol(edit_sets.load("shapes-real-edit", limit=1)) == "pie-bench"
    assert runner.default_protocol(edit_sets.load("shapes-fake-edit")) == "clean"
    assert runner.region_kind(edit_sets.load("shapes-fake-edit")) == "object"
    assert runner.region_kind(edit_sets.car_fake_edit()) == "whole"
    assert math.isfinite(metrics.psnr(*[np.zeros((16, 16, 3), np.uint8)] * 2, protocol="clean")) is False
