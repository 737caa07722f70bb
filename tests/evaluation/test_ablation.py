"""The replace-step ablation (Figs 10-11): cells map to the right methods, the command writes a grid, a table and a
plot, resumes without recomputing, and refuses bad grids in one line."""

import csv

import pytest

from freeprompt.editing.methods import FPE, P2P, Combined
from freeprompt.errors import BadInput
from freeprompt.evaluation.ablation import Cell, grid, parse_ratios


def test_cells_are_the_paper_s_three_replacement_types():
    assert Cell("self", "4-14", 0.4).method() == FPE(self_replace="0:0.4", layers="4-14")
    assert Cell("cross", "all", 0.6).method() == P2P(cross_replace="0:0.6", self_replace="0:0", cross_layers="all")
    both = Cell("both", "<=32x32", 0.3).method()
    assert isinstance(both, Combined) and both.methods == (
        FPE(self_replace="0:0.3", layers="<=32x32"),
        P2P(cross_replace="0:0.8", self_replace="0:0", cross_layers="<=32x32"))
    assert parse_ratios("0.1:0.9:0.1") == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert parse_ratios("0.2,0.8") == [0.2, 0.8]
    assert len(grid(["cross", "self", "both"], ["all", "4-14"], [0.2, 0.8])) == 12
    for bad in (lambda: grid(["mixed"], ["all"], [0.5]), lambda: grid(["self"], ["all"], [0.0]),
                lambda: parse_ratios("a:b:c"), lambda: grid(["self"], [], [0.5])):
        with pytest.raises(BadInput):
            bad()


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
