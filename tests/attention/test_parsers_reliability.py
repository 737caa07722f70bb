"""Issue #29, fuzzed: step ranges and layer specs either parse to something valid or are refused in one line."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from freeprompt.errors import BadInput
from support.fuzz import FUZZ


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
