"""Issue #29: no lost or mixed results. Output folders are refused or replaced whole, never mixed; two processes
writing the same table, JSON file and inversion cache never see half a file; damaged table rows are found and
recomputed; a failed cache save keeps the edit; killed runs' temporaries are cleaned; Ctrl-C exits 130 after keeping
what finished, and the run resumes; run.json is strict JSON; parsers and the image loader, fuzzed, either accept or
refuse in one line."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from freeprompt.cli.main import main
from freeprompt.errors import BadInput, FreepromptError
from freeprompt.io.outputs import remove_stale_temporaries, write_json
from freeprompt.io.tables import read_rows, write_rows
from test_cli import edit_args, run

FIELDS = ["id", "method", "score"]


# ---------------------------------------------------------------- output folders


def test_a_second_edit_into_the_same_folder_refuses_and_overwrite_replaces_it_whole(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(edit_args(tiny_model_dir, out, "--target", "a green car", "--save-latents"), capsys)[0] == 0
    assert (out / "target_2.png").exists() and (out / "latents.safetensors").exists()
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~_umask()  # the usual mode, not mkdtemp's private 0700
    code, _, err = run(edit_args(tiny_model_dir, out), capsys)
    assert code == 2 and "--overwrite" in err and err.count("\n") == 1
    assert run(edit_args(tiny_model_dir, out, "--overwrite"), capsys)[0] == 0
    # the earlier run's extra target and latents are gone, not left beside the new run.json
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "run.json", "source.png", "target_1.png"]
    assert json.loads((out / "run.json").read_text())["params"]["targets"] == ["a blue car"]
    assert not list(tmp_path.glob(".run.*"))


def test_overwrite_never_clears_a_folder_of_other_files(tiny_model_dir, tmp_path, capsys):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    code, _, err = run(edit_args(tiny_model_dir, mine, "--overwrite"), capsys)
    assert code == 2 and "did not write" in err
    assert (mine / "holiday.jpg").read_bytes() == b"precious"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_stale_temporaries_of_killed_runs_are_removed_and_fresh_ones_kept(tmp_path):
    old = time.time() - 2 * 3600
    for name in (".out.abc.partial", ".items.csv.tmp-123-456", ".k1.x.tmp"):
        path = tmp_path / name
        path.mkdir() if name.endswith("partial") else path.write_text("half")
        os.utime(path, (old, old))
    (tmp_path / ".out.fresh.partial").mkdir()
    (tmp_path / "items.csv").write_text("kept")
    assert remove_stale_temporaries(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.fresh.partial", "items.csv"]


def test_run_json_is_strict_json(tmp_path):
    write_json(tmp_path / "run.json", {"psnr": float("nan"), "nested": [float("inf"), 1.5], "ok": {"x": -float("inf")}})

    def refuse(name):
        raise AssertionError(f"{name} in run.json")

    data = json.loads((tmp_path / "run.json").read_text(), parse_constant=refuse)
    assert data == {"psnr": None, "nested": [None, 1.5], "ok": {"x": None}}


# ---------------------------------------------------------------- damaged tables


def _table(tmp_path, n=5):
    path = tmp_path / "items.csv"
    rows = [{"id": f"item-{i}", "method": "fpe", "score": 0.5 + i} for i in range(n)]
    write_rows(path, rows, FIELDS)
    return path


def test_intact_table_reads_back_without_warning(tmp_path):
    path = _table(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = read_rows(path)
    assert [r["id"] for r in rows] == [f"item-{i}" for i in range(5)] and rows[2]["score"] == "2.5"
    assert set(rows[0]) == set(FIELDS)


@pytest.mark.parametrize("damage,damaged,kept", [
    (lambda text: text[:-4], 1, 4),  # cut inside the last row's check
    (lambda text: text.replace("item-2,fpe", "item-2,fp"), 1, 4),  # one cell changed
    (lambda text: text.replace("item-3,fpe,3.5,", "item-3,fpe,"), 1, 4),  # a cell lost
    (lambda text: text.rsplit("\n", 3)[0][:-9], 1, 2),  # truncated mid-file: a cut row, two rows gone
])
def test_damaged_rows_are_dropped_with_a_count_and_recomputed(tmp_path, damage, damaged, kept):
    path = _table(tmp_path)
    path.write_text(damage(path.read_text()))
    with pytest.warns(UserWarning, match=f"{damaged} damaged row"):
        rows = read_rows(path)
    assert len(rows) == kept
    done = {r["id"] for r in rows}
    redone = rows + [{"id": f"item-{i}", "method": "fpe", "score": 0.5 + i} for i in range(5) if f"item-{i}" not in done]
    write_rows(path, redone, FIELDS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_rows(path)) == 5


def test_tables_written_before_row_checks_still_resume(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,method,score\nitem-0,fpe,1.0\nitem-1,fp\n")
    with pytest.warns(UserWarning, match="1 damaged row"):
        assert [r["id"] for r in read_rows(path)] == ["item-0"]


# ---------------------------------------------------------------- two processes


def _writer(args):
    folder, who, rounds = args
    from freeprompt.editing.cache import InversionCache
    from freeprompt.editing.inversion import InversionResult

    folder = Path(folder)
    cache = InversionCache(folder / "cache")
    mine = [{"id": f"{who}-{i}", "method": "fpe", "score": i} for i in range(40)]
    inversion = InversionResult(method="direct", trajectory=torch.full((3, 4, 8, 8), float(who)), uncond=None,
                                source="", steps=2, guidance=1.0, seconds=0.1)
    problems = []
    for r in range(rounds):
        try:
            write_rows(folder / "items.csv", mine, FIELDS)
            rows = read_rows(folder / "items.csv")
            if len(rows) != 40 or len({r["id"].split("-")[0] for r in rows}) != 1:
                problems.append(f"mixed or short table: {len(rows)} rows")
            write_json(folder / "run.json", {"who": who, "round": r})
            json.loads((folder / "run.json").read_text())
            cache.save("k" * 64, inversion)
            got = cache.load("k" * 64)
            if got is None or got.trajectory.unique().numel() != 1:
                problems.append("cache entry unreadable or mixed")
        except Exception as err:  # noqa: BLE001 - every failure is a finding
            problems.append(f"{type(err).__name__}: {err}")
    return problems


def test_two_processes_on_the_same_table_json_and_cache_never_see_half_a_file(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a cache entry being replaced while read is re-read, with a warning
        with multiprocessing.get_context("fork").Pool(2) as pool:
            results = pool.map(_writer, [(str(tmp_path), 1, 60), (str(tmp_path), 2, 60)])
    assert results == [[], []]
    assert not [p for p in tmp_path.rglob(".*") if "tmp" in p.name]


# ---------------------------------------------------------------- the inversion cache


def test_a_cache_that_cannot_be_written_keeps_the_finished_edit(tiny_pipe, tmp_path):
    from freeprompt.editing.cache import CacheWarning, InversionCache
    from freeprompt.editing.real import edit_real

    class FullDisk(InversionCache):
        def save(self, key, inversion, describe=None):
            raise BadInput("cannot write the inversion cache (No space left on device)", "free some space")

    photo = Image.new("RGB", (64, 64), "red")
    with pytest.warns(CacheWarning, match="not cached"):
        result = edit_real(tiny_pipe, photo, "", ["a blue car"], steps=2, cache=FullDisk(tmp_path / "c"),
                           model_key="tiny", progress=False)
    assert len(result.images) == 2 and result.params["inversion_cached"] is False


# ---------------------------------------------------------------- Ctrl-C


def test_ctrl_c_exits_130_keeps_finished_rows_and_the_run_resumes(tmp_path):
    out = tmp_path / "bench"
    args = [sys.executable, "-m", "freeprompt", "bench", "shapes", "--model", "shapes", "--color-edits", "12",
            "--shape-edits", "0", "--generation", "0", "--steps", "3", "--methods", "plain", "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(_rows(out)) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    finished = _rows(out)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].endswith("interrupted") and "Traceback" not in err
    assert 2 <= len(finished) < 12
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = _rows(out)
    assert len(rows) == 12 and [r for r in rows if r["id"] in {f["id"] for f in finished}] == finished


def _rows(out: Path) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_rows(out / "items.csv") if (out / "items.csv").exists() else []


# ---------------------------------------------------------------- fuzzing


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.text(max_size=20))
def test_step_ranges_parse_or_refuse_in_one_line(text):
    from freeprompt.attention import StepRange

    try:
        r = StepRange.parse(text)
    except BadInput as err:
        assert "\n" not in str(err)
        return
    assert 0 <= r.start <= r.end <= 1


@FUZZ
@given(st.text(alphabet="0123456789,-<=>x.allnoneupdowmi* ", max_size=16))
def test_layer_specs_parse_or_refuse_in_one_line(text):
    from freeprompt.attention import LayerSpec

    try:
        spec = LayerSpec.parse(text)
    except BadInput as err:
        assert "\n" not in str(err)
        return
    try:
        spec.chooses(3, 256, "up", 1)
    except BadInput as err:
        assert "\n" not in str(err)


@FUZZ
@given(st.text(alphabet="0123456789.:,-e naif", max_size=16))
def test_ablation_ratios_parse_or_refuse(text):
    from freeprompt.evaluation.ablation import parse_ratios

    try:
        ratios = parse_ratios(text)
    except BadInput:
        return
    assert 1 <= len(ratios) <= 1000


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["PNG", "JPEG", "GIF", "WEBP", None]))
def test_image_loader_never_crashes_on_damaged_files(tmp_path, data, fmt):
    from freeprompt.editing.images import load_image

    path = tmp_path / "photo"
    if fmt:  # a real image, cut at a random length
        import io

        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), "red").save(buffer, format=fmt)
        data = buffer.getvalue()[: max(1, len(data))]
    path.write_bytes(data)
    try:
        image = load_image(path, (64, 64))
    except BadInput as err:
        assert "\n" not in str(err)
        return
    assert image.size == (64, 64) and image.mode == "RGB"


NUMBERS = st.one_of(st.integers(min_value=-10**25, max_value=10**25).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["", "abc", "1e999", "-0", "0x10", "٣"]))
NUMERIC_OPTIONS = ["--seed", "--steps", "--guidance", "--height", "--width"]


class Loaded(BaseException):
    """Raised instead of loading a model: the command line was accepted (not an Exception, which the CLI would
    report as an internal error)."""


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(NUMERIC_OPTIONS), NUMBERS), min_size=1, max_size=3))
def test_edit_numbers_are_accepted_or_refused_in_one_line_before_loading(monkeypatch, capsys, tmp_path, pairs):
    import freeprompt.models.loading as loading

    def loaded(*args, **kwargs):
        raise Loaded

    monkeypatch.setattr(loading, "load_pipeline", loaded)
    argv = ["edit", "-s", "a red circle", "-t", "a blue circle", "-o", str(tmp_path / "never")]
    for flag, value in pairs:
        argv += [flag, value]
    try:
        main(argv)
    except Loaded:
        return  # accepted: everything the command checks before loading passed
    except SystemExit as exit_info:
        err = capsys.readouterr().err
        assert exit_info.code == 2, err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "never").exists()


def test_library_errors_are_user_errors():
    assert issubclass(BadInput, FreepromptError)


def test_probe_results_carry_a_checksum(tmp_path, capsys):
    """A results file changed after writing is refused by ``probe report`` in one line; an intact one loads back
    equal to what was written (NaN stored as null)."""
    from freeprompt.analysis.report import load_results, write_result

    result = {"experiment": "x", "classes": ["a", "b"], "results": {"authors": {"1": {"accuracy": 0.5}}},
              "note": float("nan")}
    path = write_result(result, tmp_path / "results")
    loaded = load_results(path)
    assert loaded == [{**result, "note": None}]
    data = json.loads(path.read_text())
    data["results"]["authors"]["1"]["accuracy"] = 0.9
    path.write_text(json.dumps(data))
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "report", str(path), "-o", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "checksum mismatch" in err
    assert not (tmp_path / "report").exists()


def test_library_log_messages_are_prefixed_one_line(capsys):
    """diffusers' and transformers' own errors appear as one freeprompt-prefixed line each, once."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for _ in range(2):  # calling main twice must not double the handler
        try:
            main(["layers", "--help"])
        except SystemExit as exit_info:
            assert exit_info.code in (0, None)
    capsys.readouterr()
    diffusers_logging.get_logger("diffusers.pipelines").error("bad\nthing")
    transformers_logging.get_logger("transformers.models").error("other")
    err = capsys.readouterr().err
    assert err == "freeprompt: diffusers error: bad thing\nfreeprompt: transformers error: other\n"
