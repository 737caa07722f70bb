"""Issue #29's table of bad command lines (tests/support/bad_cli_cases.py), run in-process: every one exits with
status 2, one line on stderr naming the problem, no traceback, and no output folder left behind; validation comes
before any model is loaded (the cases run in well under a second each, no pipeline is built)."""

from __future__ import annotations

import pytest

from freeprompt.cli.main import main
from support import bad_cli_cases, bad_cli_cases_datasets, bad_cli_cases_ui

# the general table, the datasets' and the web UI command's (#35)
CASES = bad_cli_cases.CASES + bad_cli_cases_datasets.CASES + bad_cli_cases_ui.CASES


@pytest.fixture
def places(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("someone else's")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "bad.png").write_text("not an image")
    (tmp_path / "empty.json").write_text("{}")
    (tmp_path / "handjson.json").write_text('[{"experiment": 1}]')
    return {"out": tmp_path / "out", "file": tmp_path / "file", "foreign": tmp_path / "foreign",
            "emptydir": tmp_path / "emptydir", "badimage": tmp_path / "bad.png", "emptyjson": tmp_path / "empty.json",
            "handjson": tmp_path / "handjson.json", **bad_cli_cases_datasets.make_files(tmp_path)}


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any attempt to load a pipeline fails the test: refusals must come first."""
    import freeprompt.models.loading as loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    for name in ("_from_folder", "_from_file", "_from_hub"):
        monkeypatch.setattr(loading, name, refuse)


@pytest.mark.parametrize("case_id,argv,word", CASES, ids=[c[0] for c in CASES])
def test_bad_command_line_is_refused_in_one_line(case_id, argv, word, places, capsys, no_model_loads):
    args = [a.format(**places) for a in argv]
    before = sorted(p.name for p in places["foreign"].iterdir())
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("freeprompt: error: "), err
    assert "Traceback" not in err
    assert word.lower() in lines[0].lower(), lines[0]
    assert not places["out"].exists()
    assert sorted(p.name for p in places["foreign"].iterdir()) == before


def test_the_table_covers_the_issue():
    # at least the ~50 cases of issue #29, each a distinct command line
    assert len(CASES) >= 50
    assert len({c[0] for c in CASES}) == len(CASES)
    assert len({tuple(c[1]) for c in CASES}) == len(CASES)
