"""Issue #29, fuzzed: the ablation's ratio lists either parse (1 to 1000 ratios) or are refused."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from freeprompt.errors import BadInput
from support.fuzz import FUZZ


@FUZZ
@given(st.text(alphabet="0123456789.:,-e naif", max_size=16))
def test_ablation_ratios_parse_or_refuse(text):
    from freeprompt.evaluation.ablation import parse_ratios

    try:
        ratios = parse_ratios(text)
    except BadInput:
        return
    assert 1 <= len(ratios) <= 1000
