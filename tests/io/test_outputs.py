"""Run folders (``freeprompt.io.outputs``) on their own: output-folder checks, atomic folders and files, stale
temporaries, strict JSON and its checksum, the labelled grid, and a whole edit's folder. (Issue #29's end-to-end
checks of the same: tests/io/test_outputs_reliability.py, tests/cli/test_cli_reliability.py.)"""

import hashlib
import json
import os
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from freeprompt.errors import BadInput
from freeprompt.io.outputs import (
    STALE_AFTER_S,
    atomic_folder,
    check_output_folder,
    check_writable,
    json_check,
    json_safe,
    labelled_grid,
    remove_stale_temporaries,
    save_edit,
    temporary_beside,
    write_json,
    write_text_atomic,
)


def age(path, seconds):
    then = time.time() - seconds
    os.utime(path, (then, then))


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------------------- folder checks

def test_check_writable_accepts_a_new_folder_without_creating_it(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    assert check_writable(out) == out and not (tmp_path / "a").exists()
    assert check_writable(str(tmp_path)) == tmp_path  # a string is taken as a path


def test_check_writable_refuses_files_and_unwritable_places(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(BadInput, match="is a file, not a folder"):
        check_writable(blocker)
    with pytest.raises(BadInput, match="is a file, so it cannot hold"):
        check_writable(blocker / "sub" / "run")
    with pytest.raises(BadInput, match="cannot write to /proc"):  # even for root: a pseudo file system
        check_writable("/proc/freeprompt-run")
    assert blocker.read_text() == "x"


def test_check_output_folder_takes_new_and_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    for name in ("new", "empty"):
        assert check_output_folder(tmp_path / name) == tmp_path / name
    assert not (tmp_path / "new").exists()


def test_check_output_folder_refuses_an_earlier_run_unless_overwrite(tmp_path):
    (tmp_path / "run.json").write_text('{"files": ["source.png", "m/run.json"]}')
    (tmp_path / "source.png").write_bytes(b"png")
    (tmp_path / "m").mkdir()
    with pytest.raises(BadInput, match="holds an earlier run") as err:
        check_output_folder(tmp_path)
    assert "--overwrite" in err.value.fix
    assert check_output_folder(tmp_path, overwrite=True) == tmp_path


@pytest.mark.parametrize("listing", ['{"files": ["source.png"]}', "{}", "[1]", "not json"])
def test_overwrite_never_takes_a_run_folder_holding_files_its_run_json_does_not_list(tmp_path, listing):
    (tmp_path / "run.json").write_text(listing)
    (tmp_path / "source.png").write_bytes(b"png")
    (tmp_path / "thesis.txt").write_text("mine")
    with pytest.raises(BadInput, match="did not write .*thesis.txt"):
        check_output_folder(tmp_path, overwrite=True)


@pytest.mark.parametrize("names,shown", [(["a.jpg"], "(a.jpg)"), (["d", "c", "b", "a"], "(a, b, c, ...)")])
def test_check_output_folder_never_takes_a_folder_of_other_files(tmp_path, names, shown):
    for name in names:
        (tmp_path / name).write_text("mine")
    for kwargs in ({}, {"overwrite": True}, {"resumable": True}, {"overwrite": True, "resumable": True}):
        with pytest.raises(BadInput, match="did not write") as err:
            check_output_folder(tmp_path, **kwargs)
        assert shown in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_check_output_folder_resumes_only_a_resumable_run(tmp_path):
    (tmp_path / "settings.json").write_text("{}")
    (tmp_path / "items.csv").write_text("id\n")
    assert check_output_folder(tmp_path, resumable=True) == tmp_path
    with pytest.raises(BadInput, match="holds an earlier run"):
        check_output_folder(tmp_path)  # an edit into a benchmark's folder


# ------------------------------------------------------------------------------------------- atomic folders

def test_atomic_folder_appears_whole_with_the_usual_mode(tmp_path):
    out = tmp_path / "run"
    with atomic_folder(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".run.") and tmp.name.endswith(".partial")
        (tmp / "a.txt").write_text("a")
        assert not out.exists()  # nothing is visible under the final name before the block ends
    assert [p.name for p in out.iterdir()] == ["a.txt"] and (out / "a.txt").read_text() == "a"
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_atomic_folder_leaves_nothing_when_the_block_fails(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_folder(tmp_path / "run") as tmp:
            (tmp / "half.png").write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_text("earlier")
    with pytest.raises(RuntimeError):
        with atomic_folder(old, replace=True) as tmp:
            (tmp / "run.json").write_text("later")
            raise RuntimeError("boom")
    assert [p.name for p in old.iterdir()] == ["run.json"] and (old / "run.json").read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_atomic_folder_replaces_an_earlier_run_whole_or_adds_to_a_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "target_2.png").write_text("earlier")
    (out / "run.json").write_text("earlier")
    with atomic_folder(out, replace=True) as tmp:
        (tmp / "run.json").write_text("later")
    assert [p.name for p in out.iterdir()] == ["run.json"] and (out / "run.json").read_text() == "later"
    with atomic_folder(out) as tmp:  # not replace: the files join the folder, same names replaced
        (tmp / "run.json").write_text("third")
        (tmp / "extra.txt").write_text("x")
    assert sorted(p.name for p in out.iterdir()) == ["extra.txt", "run.json"]
    assert (out / "run.json").read_text() == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no .partial, no .old


def test_atomic_folder_clears_its_own_stale_temporaries_only(tmp_path):
    stale, fresh, other = tmp_path / ".run.x1.partial", tmp_path / ".run.x2.partial", tmp_path / ".other.x3.partial"
    for path in (stale, fresh, other):
        path.mkdir()
    for path in (stale, other):
        age(path, STALE_AFTER_S + 60)
    with atomic_folder(tmp_path / "run"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.x3.partial", ".run.x2.partial", "run"]


# ------------------------------------------------------------------------------------------- temporaries

def test_remove_stale_temporaries_goes_by_age_and_pattern(tmp_path):
    names = {".a.tmp-1-2": "file", ".b.partial": "dir", ".c.old": "dir", ".d.tmp": "file", "e.tmp": "file",
             ".f.csv": "file"}
    for name, kind in names.items():
        (tmp_path / name).mkdir() if kind == "dir" else (tmp_path / name).write_text("x")
        age(tmp_path / name, STALE_AFTER_S + 60)
    (tmp_path / ".young.tmp").write_text("x")
    age(tmp_path / ".young.tmp", STALE_AFTER_S - 60)
    assert remove_stale_temporaries(tmp_path, (".*.tmp",)) == 1  # only the patterns given
    assert remove_stale_temporaries(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".f.csv", ".young.tmp", "e.tmp"]
    assert remove_stale_temporaries(tmp_path / "missing") == 0


def test_remove_stale_temporaries_unlinks_a_link_without_following_it(tmp_path):
    kept = tmp_path / "precious"
    kept.mkdir()
    (kept / "photo.jpg").write_text("x")
    link = tmp_path / ".l.partial"
    link.symlink_to(kept, target_is_directory=True)
    then = time.time() - STALE_AFTER_S - 60
    os.utime(link, (then, then), follow_symlinks=False)
    assert remove_stale_temporaries(tmp_path) == 1
    assert not link.is_symlink() and (kept / "photo.jpg").exists()


def test_temporary_beside_is_per_process_and_thread_and_found_when_stale(tmp_path):
    target = tmp_path / "items.csv"
    mine = temporary_beside(target)
    assert mine.parent == tmp_path and mine.name == f".items.csv.tmp-{os.getpid()}-{threading.get_ident()}"
    other = []
    thread = threading.Thread(target=lambda: other.append(temporary_beside(target)))
    thread.start()
    thread.join()
    assert other[0] != mine and temporary_beside(str(target)) == mine
    mine.write_text("left by a killed writer")
    age(mine, STALE_AFTER_S + 60)
    assert remove_stale_temporaries(tmp_path) == 1 and not mine.exists()


# ------------------------------------------------------------------------------------------- atomic files, JSON

def test_write_text_atomic_replaces_the_file_and_never_writes_into_it(tmp_path):
    path = tmp_path / "summary.md"
    path.write_text("old text")
    with open(path, encoding="utf-8") as reader:  # a reader that opened the old file keeps reading the old file
        write_text_atomic(path, "néw — text ✓")
        assert reader.read() == "old text"
    assert path.read_bytes() == "néw — text ✓".encode()
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "half \ud800")  # fails while writing: the file keeps its old text
    assert path.read_text(encoding="utf-8") == "néw — text ✓"


def test_json_safe_nulls_non_finite_numbers_everywhere():
    value = {"a": float("nan"), "b": [1, float("inf"), (2.5, -float("inf"))], "c": {"d": "nan", "e": None, "f": True}}
    assert json_safe(value) == {"a": None, "b": [1, None, [2.5, None]], "c": {"d": "nan", "e": None, "f": True}}
    assert value["a"] != value["a"] and value["b"][2] == (2.5, -float("inf"))  # the input is left as it was
    assert json_safe(np.float64("nan")) is None and json_safe(3) == 3 and json_safe("x") == "x"


def test_write_json_is_strict_indented_and_stringifies_the_rest(tmp_path):
    path = tmp_path / "run.json"
    write_json(path, {"z": 1, "a": (1, float("nan")), "where": tmp_path}, indent=4)
    text = path.read_text()
    assert text.endswith("}\n") and '\n    "z": 1,' in text  # indent 4, the caller's key order
    assert json.loads(text) == {"z": 1, "a": [1, None], "where": str(tmp_path)}
    write_json(path, {"again": True})
    assert json.loads(path.read_text()) == {"again": True} and [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_json_check_ignores_key_order_and_catches_any_change():
    data = {"experiment": "x", "results": {"1": {"accuracy": 0.5}}, "note": float("nan")}
    check = json_check(data)
    assert len(check) == 16 and int(check, 16) >= 0
    # stored with results: the definition must not drift (sha256 of sorted-key strict JSON, first 16 hex digits)
    assert json_check({"b": [1, 2], "a": None}) == hashlib.sha256(b'{"a": null, "b": [1, 2]}').hexdigest()[:16]
    assert json_check({"note": None, "results": {"1": {"accuracy": 0.5}}, "experiment": "x"}) == check
    assert json_check({**data, "results": {"1": {"accuracy": 0.6}}}) != check
    assert json_check({**data, "extra": 0}) != check


# ------------------------------------------------------------------------------------------- grids and edits

def solid(color, size=(64, 24), mode="RGB"):
    return Image.new(mode, size, color)


def test_labelled_grid_puts_each_image_under_its_label():
    images = [solid("red"), solid("blue"), solid(128, mode="L")]
    grid = labelled_grid(images, ["", "source: a blue car", "target 1: a grey car"])
    pixels = np.asarray(grid)
    band = grid.height - 24
    assert grid.mode == "RGB" and grid.width == 3 * 64 and band > 0
    for i, image in enumerate(images):  # every image, pixel for pixel, below the band in its own column
        assert np.array_equal(pixels[band:, 64 * i:64 * (i + 1)], np.asarray(image.convert("RGB")))
    label_area = pixels[:band]
    inked = [(label_area[:, 64 * i:64 * (i + 1)] < 128).all(axis=2).any() for i in range(3)]
    assert inked == [False, True, True]  # text where there is a label, white where there is none
    assert (label_area[:, :64] == 255).all()


def test_labelled_grid_grows_its_band_for_long_labels():
    short = labelled_grid([solid("red")], ["a car"])
    long = labelled_grid([solid("red")], ["a photo of a very long prompt that cannot fit on one line of the grid"])
    assert long.height > short.height and long.width == short.width == 64


def fake_edit(prompts, real=False):
    images = [solid(c, (16, 16)) for c in ("red", "green", "blue")[: len(prompts)]]
    latents = torch.arange(len(prompts) * 4 * 2 * 2, dtype=torch.float32).reshape(len(prompts), 4, 2, 2)
    params = {"targets": prompts[1:], "real_image": real, "inversion": "direct" if real else None}
    return SimpleNamespace(images=images, prompts=prompts, params=params, latents=latents,
                           initial_latents=torch.ones(1, 4, 2, 2), timings={"denoise_s": 1.0},
                           input_image=solid("white", (16, 16)) if real else None)


def test_save_edit_writes_the_run_folder(tmp_path):
    from safetensors.torch import load_file

    result = fake_edit(["a red car", "a green car", "a blue car"])
    out = save_edit(result, tmp_path / "run", model={"id": "tiny", "device": "cpu"}, save_latents=True,
                    extra={"note": float("nan")})
    files = ["source.png", "target_1.png", "target_2.png", "grid.png"]
    assert out == tmp_path / "run" and sorted(p.name for p in out.iterdir()) == sorted(files + ["latents.safetensors",
                                                                                                 "run.json"])
    for name, image in zip(files, result.images):
        assert np.array_equal(np.asarray(Image.open(out / name)), np.asarray(image))
    info = json.loads((out / "run.json").read_text())
    assert info["params"] == result.params and info["model"] == {"id": "tiny", "device": "cpu"} and info["note"] is None
    assert info["files"] == files + ["latents.safetensors"]
    assert info["timings"]["denoise_s"] == 1.0 and info["timings"]["save_s"] >= 0
    assert info["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0] and info["machine"]
    tensors = load_file(str(out / "latents.safetensors"))
    assert set(tensors) == {"source", "target_1", "target_2", "initial"}
    assert torch.equal(tensors["target_2"], result.latents[2])
    assert torch.equal(tensors["initial"], result.initial_latents)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_save_edit_of_a_photo_replaces_the_earlier_run(tmp_path):
    save_edit(fake_edit(["a red car", "a green car", "a blue car"]), tmp_path / "run", model={}, save_latents=True)
    out = save_edit(fake_edit(["", "a blue car"], real=True), tmp_path / "run", model={})
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "input.png", "run.json", "source.png", "target_1.png"]
    info = json.loads((out / "run.json").read_text())
    assert info["files"] == ["source.png", "target_1.png", "grid.png", "input.png"] and info["params"]["real_image"]
