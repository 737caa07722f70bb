"""``freeprompt ablate`` (Figs 10-11) end to end: it writes a grid, a table and a plot, resumes without recomputing,
and refuses bad grids in one line."""

import csv

import pytest


def test_ablate_command_writes_grid_table_plot_and_resumes(tiny_model_dir, tmp_path, capsys):
    from freeprompt.cli.main import main

    out = tmp_path / "ablation"
    argv = ["ablate", "--model", str(tiny_model_dir), "--out", str(out), "--items", "2", "--layers", "all", "--layers",
            "4-14", "--ratios", "0.5,1", "--steps", "2", "--guidance", "3", "--quiet"]
    main(argv)
    rows = list(csv.DictReader(open(out / "cells.csv")))
    assert len(rows) == 2 * 3 * 2 * 2  # items x types x layer sets x ratios
    assert {r["type"] for r in rows} == {"cross", "self", "both"} and all(r["iou"] for r in rows)
    summary = (out / "summary.md").read_text()
    assert "| self | 4-14 |" in summary and "r=0.5" in summary
    for name in ("figure.png", "plot.png", "run.json"):
        assert (out / name).exists(), name
    before = (out / "cells.csv").read_bytes()
    main(argv)
    assert (out / "cells.csv").read_bytes() == before
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*argv[:4], str(tmp_path / "x"), "--ratios", "0.5,1.5"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "ratios must be in (0, 1]" in err and err.count("\n") == 1
