"""The replace-step ablation (Figs 10-11): cells map to the right methods, ratio lists parse, and bad grids are
refused. (The ablate command end to end: tests/cli/test_ablate_cmd.py.)"""


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
