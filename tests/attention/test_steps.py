import pytest

from freeprompt.attention import StepRange
from freeprompt.errors import BadInput


def test_official_step_rule():
    r = StepRange.parse("0:0.8")
    assert r.steps(50) == list(range(40))
    assert [i for i in range(7) if r.contains(i, 7)] == [0, 1, 2, 3, 4]  # int(0.8*7) = 5
    assert StepRange.parse("0.2:0.5").steps(10) == [2, 3, 4]
    assert StepRange.parse("0:0").steps(50) == []
    assert StepRange.parse(":").steps(4) == [0, 1, 2, 3]


@pytest.mark.parametrize("spec", ["0.5:0.2", "-0.1:0.5", "0:1.5", "abc", "0.1", "1:2:3"])
def test_bad_step_ranges(spec):
    with pytest.raises(BadInput):
        StepRange.parse(spec)
