"""Issue #29 for the command line: output folders are refused or replaced whole, never mixed; Ctrl-C exits 130 after
keeping what finished, and the run resumes; numeric options, fuzzed, are accepted or refused in one line before any
model loads; library errors are user errors; diffusers' and transformers' log messages come as one prefixed line.
(The issue's other checks sit with the floor they test: tests/io, tests/editing, tests/attention, tests/evaluation
and tests/analysis, files *_reliability.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from freeprompt.cli.main import main
from freeprompt.errors import BadInput, FreepromptError
from freeprompt.io.tables import read_rows
from support.cli_runs import edit_args, run
from support.fuzz import FUZZ
from support.signals import interruptible

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


def test_overwrite_replaces_only_its_own_run_and_never_the_current_folder(tiny_model_dir, tmp_path, capsys,
                                                                          monkeypatch):
    out = tmp_path / "run"
    assert run(edit_args(tiny_model_dir, out, "--save-latents"), capsys)[0] == 0
    (out / "thesis.txt").write_text("three years of work")
    code, _, err = run(edit_args(tiny_model_dir, out, "--overwrite"), capsys)
    assert code == 2 and "thesis.txt" in err and "did not write" in err and err.count("\n") == 1
    assert (out / "thesis.txt").read_text() == "three years of work" and (out / "latents.safetensors").exists()
    (out / "thesis.txt").unlink()
    assert run(edit_args(tiny_model_dir, out, "--overwrite"), capsys)[0] == 0  # its own files only: replaced
    monkeypatch.chdir(out)
    for target in (".", "", str(tmp_path)):
        code, _, err = run(edit_args(tiny_model_dir, Path(target), "--overwrite"), capsys)
        assert code == 2 and "current folder" in err, (target, err)
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "run.json", "source.png", "target_1.png"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------- Ctrl-C


EDITS = 40


def test_ctrl_c_exits_130_keeps_finished_rows_and_the_run_resumes(tmp_path):
    out = tmp_path / "bench"
    # 40 edits (about 10 s on a quiet core), so that the run cannot finish between the second row and the signal
    args = [sys.executable, "-m", "freeprompt", "bench", "shapes", "--model", "shapes", "--color-edits", str(EDITS),
            "--shape-edits", "0", "--generation", "0", "--steps", "3", "--method", "plain", "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)
    deadline = time.time() + 120
    while time.time() < deadline and len(_rows(out)) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    finished = _rows(out)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].endswith("interrupted") and "Traceback" not in err
    assert 2 <= len(finished) < EDITS
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = _rows(out)
    assert len(rows) == EDITS and [r for r in rows if r["id"] in {f["id"] for f in finished}] == finished


def _rows(out: Path) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_rows(out / "items.csv") if (out / "items.csv").exists() else []


# ---------------------------------------------------------------- fuzzing


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


def test_library_log_messages_are_prefixed_one_line(capsys):
    """diffusers' and transformers' own errors appear as one freeprompt-prefixed line each, once, from the moment a
    command loads its model (a usage error never imports them)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for _ in range(2):  # loading twice must not double the handler
        try:
            main(["layers", "--model", "shapes"])
        except SystemExit as exit_info:
            assert exit_info.code in (0, None)
    capsys.readouterr()
    diffusers_logging.get_logger("diffusers.pipelines").error("bad\nthing")
    transformers_logging.get_logger("transformers.models").error("other")
    err = capsys.readouterr().err
    assert err == "freeprompt: diffusers error: bad thing\nfreeprompt: transformers error: other\n"


CTRL_C_WHILE_IMPORTING = """
import builtins
real_import = builtins.__import__

def importing(name, globals=None, locals=None, fromlist=(), level=0):
    if name == "main" and level == 1:  # the command's own modules, as Ctrl-C would hit them during start-up
        raise KeyboardInterrupt
    return real_import(name, globals, locals, fromlist, level)

builtins.__import__ = importing
from freeprompt.cli import run
run()
"""


def test_ctrl_c_while_the_command_starts_is_exit_130_without_a_traceback():
    done = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_IMPORTING, "edit"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 130 and done.stderr == "freeprompt: interrupted\n", done.stderr
