"""The steps study's report (lab/steps_study.py, issue #40 item 2): rates per (scheduler, steps, method) and the
cheapest setting that keeps >= 95 % of FPE's 50-step DDIM rate, on rows written here."""

from lab.steps_study import cheapest_setting, rates


def rows(cells: dict) -> list[dict]:
    """``cells``: {(scheduler, steps, method): (successes, n)} -> result rows with a ``joint`` column."""
    out = []
    for (scheduler, steps, method), (hits, n) in cells.items():
        out += [{"scheduler": scheduler, "steps": str(steps), "method": method, "joint": str(i < hits)}
                for i in range(n)]
    return out


def test_rates_and_the_cheapest_setting():
    table = rates(rows({("ddim", 50, "fpe"): (20, 20), ("ddim", 8, "fpe"): (18, 20),
                        ("dpm++2m", 8, "fpe"): (19, 20), ("dpm++2m", 6, "fpe"): (18, 20),
                        ("unipc", 4, "fpe"): (10, 20), ("ddim", 4, "plain"): (20, 20)}))
    assert table[("dpm++2m", 8, "fpe")][:2] == (0.95, 20)
    low, high = table[("dpm++2m", 8, "fpe")][2:]
    assert 0.7 < low < 0.95 < high <= 1.0  # the Wilson interval around 19 of 20
    # 95 % of 100 %: dpm++2m at 8 steps qualifies (19/20); 6 steps (18/20) and plain's rows do not count
    assert cheapest_setting(table) == ("dpm++2m", 8)
    tied = rates(rows({("ddim", 50, "fpe"): (10, 10), ("euler", 6, "fpe"): (10, 10), ("ddim", 6, "fpe"): (10, 10)}))
    assert cheapest_setting(tied) == ("ddim", 6)  # equal steps: the scheduler listed first
    assert cheapest_setting(rates(rows({("ddim", 50, "fpe"): (10, 10), ("ddim", 4, "fpe"): (1, 10)}))) == ("ddim", 50)
