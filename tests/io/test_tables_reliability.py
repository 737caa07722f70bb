"""Issue #29 for result tables: damaged rows are found, counted and recomputed; two processes writing the same table,
JSON file and inversion cache never see half a file."""

from __future__ import annotations

import json
import multiprocessing
import warnings
from pathlib import Path

import pytest
import torch

from freeprompt.io.outputs import write_json
from freeprompt.io.tables import read_rows, write_rows

FIELDS = ["id", "method", "score"]


# ---------------------------------------------------------------- damaged tables


def _table(tmp_path, n=5):
    path = tmp_path / "items.csv"
    rows = [{"id": f"item-{i}", "method": "fpe", "score": 0.5 + i} for i in range(n)]
    write_rows(path, rows, FIELDS)
    return path


def test_intact_table_reads_back_without_warning(tmp_path):
    path = _table(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = read_rows(path)
    assert [r["id"] for r in rows] == [f"item-{i}" for i in range(5)] and rows[2]["score"] == "2.5"
    assert set(rows[0]) == set(FIELDS)


@pytest.mark.parametrize("damage,damaged,kept", [
    (lambda text: text[:-4], 1, 4),  # cut inside the last row's check
    (lambda text: text.replace("item-2,fpe", "item-2,fp"), 1, 4),  # one cell changed
    (lambda text: text.replace("item-3,fpe,3.5,", "item-3,fpe,"), 1, 4),  # a cell lost
    (lambda text: text.rsplit("\n", 3)[0][:-9], 1, 2),  # truncated mid-file: a cut row, two rows gone
])
def test_damaged_rows_are_dropped_with_a_count_and_recomputed(tmp_path, damage, damaged, kept):
    path = _table(tmp_path)
    path.write_text(damage(path.read_text()))
    with pytest.warns(UserWarning, match=f"{damaged} damaged row"):
        rows = read_rows(path)
    assert len(rows) == kept
    done = {r["id"] for r in rows}
    redone = rows + [{"id": f"item-{i}", "method": "fpe", "score": 0.5 + i}
                     for i in range(5) if f"item-{i}" not in done]
    write_rows(path, redone, FIELDS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_rows(path)) == 5


def test_tables_written_before_row_checks_still_resume(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,method,score\nitem-0,fpe,1.0\nitem-1,fp\n")
    with pytest.warns(UserWarning, match="1 damaged row"):
        assert [r["id"] for r in read_rows(path)] == ["item-0"]


# ---------------------------------------------------------------- two processes


def _writer(args):
    folder, who, rounds = args
    from freeprompt.editing.cache import InversionCache
    from freeprompt.editing.inversion import InversionResult

    folder = Path(folder)
    cache = InversionCache(folder / "cache")
    mine = [{"id": f"{who}-{i}", "method": "fpe", "score": i} for i in range(40)]
    inversion = InversionResult(method="direct", trajectory=torch.full((3, 4, 8, 8), float(who)), uncond=None,
                                source="", steps=2, guidance=1.0, seconds=0.1)
    problems = []
    for r in range(rounds):
        try:
            write_rows(folder / "items.csv", mine, FIELDS)
            rows = read_rows(folder / "items.csv")
            if len(rows) != 40 or len({r["id"].split("-")[0] for r in rows}) != 1:
                problems.append(f"mixed or short table: {len(rows)} rows")
            write_json(folder / "run.json", {"who": who, "round": r})
            json.loads((folder / "run.json").read_text())
            cache.save("k" * 64, inversion)
            got = cache.load("k" * 64)
            if got is None or got.trajectory.unique().numel() != 1:
                problems.append("cache entry unreadable or mixed")
        except Exception as err:  # noqa: BLE001 - every failure is a finding
            problems.append(f"{type(err).__name__}: {err}")
    return problems


def test_two_processes_on_the_same_table_json_and_cache_never_see_half_a_file(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a cache entry being replaced while read is re-read, with a warning
        with multiprocessing.get_context("fork").Pool(2) as pool:
            results = pool.map(_writer, [(str(tmp_path), 1, 60), (str(tmp_path), 2, 60)])
    assert results == [[], []]
    assert not [p for p in tmp_path.rglob(".*") if "tmp" in p.name]
