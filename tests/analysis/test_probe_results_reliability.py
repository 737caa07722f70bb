"""Issue #29 for probing results: they carry a checksum, so a results file changed after writing is refused."""

from __future__ import annotations

import json

import pytest

from freeprompt.cli.main import main


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
