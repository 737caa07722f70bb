"""Issue #34: one resumable sweep under the shapes benchmark, the ablation and ``freeprompt eval``. Units of one or
several rows, resumed after a crash or Ctrl-C, recomputed when a row is damaged or cut, refused under other
settings or another shard count; shards split and merged; the launcher's position checked; the shipped result
folders read back whole and resume with nothing to compute. A fake work function stands in for the model."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from freeprompt.errors import BadInput
from freeprompt.io.sweep import (
    Shards,
    Sweep,
    Unit,
    all_rows,
    distributed_position,
    is_sharded,
    plan,
    row_key,
    run_tables,
    wait_for_shards,
)
from freeprompt.io.tables import read_rows, write_rows

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
FIELDS = ["unit", "part", "value"]
KEY = ("unit",)


class Work:
    """Rows of a unit, one per part; raises ``error`` instead of the unit numbered ``stop_at`` (from 0)."""

    def __init__(self, stop_at: int | None = None, error: BaseException | None = None):
        self.calls, self.stop_at, self.error = [], stop_at, error

    def __call__(self, unit: Unit) -> list[dict]:
        if len(self.calls) == self.stop_at:
            raise self.error
        self.calls.append(unit.key[0])
        return [{"unit": unit.key[0], "part": p, "value": f"{unit.key[0]}.{p}"} for p in range(unit.rows)]


def _units(n: int = 6, rows: int = 3) -> list[Unit]:
    return [Unit((f"u{i}",), rows=rows, index=i) for i in range(n)]


def _sweep(out: Path, settings: dict | None = None, shards: Shards | None = None) -> Sweep:
    return Sweep(out, settings or {"steps": 2}, FIELDS, KEY, "items.csv", shards or Shards())


def _quiet_rows(path: Path) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact table reads back without a warning
        return read_rows(path)


# ---------------------------------------------------------------- resume


def test_a_rerun_after_a_crash_computes_only_the_rest_and_writes_the_same_table(tmp_path):
    rows = _sweep(tmp_path / "whole").run(_units(), Work())
    whole = (tmp_path / "whole" / "items.csv").read_bytes()
    write_rows(tmp_path / "format.csv", rows, FIELDS)
    assert (tmp_path / "format.csv").read_bytes() == whole  # appended units: the bytes of a table written whole
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crash"):
        _sweep(out).run(_units(), Work(stop_at=2, error=RuntimeError("crash")))
    assert {r["unit"] for r in _quiet_rows(out / "items.csv")} == {"u0", "u1"}
    assert not (out / "items.done").exists()
    work = Work()
    rows = _sweep(out).run(_units(), work)
    assert work.calls == ["u2", "u3", "u4", "u5"] and len(rows) == 18
    assert (out / "items.csv").read_bytes() == whole and (out / "items.done").exists()
    again = Work()
    _sweep(out).run(_units(), again)
    assert again.calls == [] and (out / "items.csv").read_bytes() == whole


def test_keyboard_interrupt_keeps_every_finished_unit_and_the_run_resumes(tmp_path):
    ticks = []
    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path).run(_units(), Work(stop_at=3, error=KeyboardInterrupt()), lambda *a: ticks.append(a))
    assert ticks == [(1, 6), (2, 6), (3, 6)]
    rows = _quiet_rows(tmp_path / "items.csv")
    assert [(r["unit"], r["part"]) for r in rows] == [(f"u{i}", str(p)) for i in range(3) for p in range(3)]
    work = Work()
    _sweep(tmp_path).run(_units(), work)
    assert work.calls == ["u3", "u4", "u5"] and len(_quiet_rows(tmp_path / "items.csv")) == 18


def test_a_damaged_row_in_a_unit_of_several_rows_recomputes_the_whole_unit(tmp_path):
    _sweep(tmp_path).run(_units(), Work())
    table = tmp_path / "items.csv"
    table.write_bytes(table.read_bytes().replace(b"u1,1,u1.1,", b"u1,1,u1.X,"))
    work = Work()
    with pytest.warns(UserWarning, match="1 damaged row"):
        _sweep(tmp_path).run(_units(), work)
    assert work.calls == ["u1"]
    rows = _quiet_rows(table)
    pairs = [(r["unit"], r["part"]) for r in rows]
    assert sorted(pairs) == sorted((f"u{i}", str(p)) for i in range(6) for p in range(3))  # each row once
    assert pairs[-3:] == [("u1", "0"), ("u1", "1"), ("u1", "2")]  # the leftovers dropped, the unit redone


def test_a_torn_last_line_fails_its_check_and_its_unit_is_computed_again(tmp_path):
    _sweep(tmp_path).run(_units(), Work())
    table = tmp_path / "items.csv"
    whole = table.read_bytes()
    table.write_bytes(whole[:-9])  # killed in the middle of the last row
    work = Work()
    with pytest.warns(UserWarning, match="1 damaged row"):
        _sweep(tmp_path).run(_units(), work)
    assert work.calls == ["u5"] and table.read_bytes() == whole


def test_a_unit_that_gives_other_rows_than_it_promised_is_refused(tmp_path):
    with pytest.raises(ValueError, match="gave 3 row"):
        _sweep(tmp_path).run([Unit(("u0",), rows=2)], lambda unit: Work()(Unit(unit.key, rows=3)))
    assert not (tmp_path / "items.csv").exists()


def test_plan_keeps_finished_units_and_drops_the_leftovers_of_unfinished_ones():
    rows = [{"unit": "a", "part": "0"}, {"unit": "b", "part": "0"}, {"unit": "a", "part": "1"},
            {"unit": "z", "part": "0"}]
    chosen = plan(rows, [Unit(("a",), rows=2), Unit(("b",), rows=2), Unit(("c",))], KEY)
    assert [u.key for u in chosen.todo] == [("b",), ("c",)] and chosen.finished == 1 and chosen.dropped == 1
    assert chosen.kept == [rows[0], rows[2], rows[3]]  # "z" is no unit of this run: kept as it was


def test_temporaries_of_killed_runs_are_removed_and_fresh_ones_kept(tmp_path):
    stale, fresh = tmp_path / ".items.csv.tmp-1-2", tmp_path / ".items.csv.tmp-3-4"
    for path in (stale, fresh):
        path.write_text("half a table")
    os.utime(stale, (time.time() - 2 * 3600,) * 2)
    _sweep(tmp_path).run(_units(2), Work())
    assert not stale.exists() and fresh.exists() and len(_quiet_rows(tmp_path / "items.csv")) == 6


# ---------------------------------------------------------------- refusals


def test_other_settings_another_shard_count_or_no_settings_are_refused_in_one_line(tmp_path):
    out = tmp_path / "run"
    _sweep(out).run(_units(), Work())
    before = (out / "items.csv").read_bytes()
    for settings, shards, problem in (({"steps": 3}, Shards(), "other settings (steps)"),
                                      ({"steps": 2, "seed": 1}, Shards(), "other settings (seed)"),
                                      ({"steps": 2}, Shards(2, 0), "split into 1 shard")):
        with pytest.raises(BadInput, match=re.escape(problem)) as refused:
            _sweep(out, settings, shards).run(_units(), Work())
        assert "\n" not in str(refused.value)
    assert (out / "items.csv").read_bytes() == before
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(out / "items.csv", bare / "items.shard-0-of-2.csv")
    with pytest.raises(BadInput, match="without a settings.json"):
        _sweep(bare, shards=Shards(2, 0)).run(_units(), Work())
    (out / "settings.json").write_text("{half")
    with pytest.raises(BadInput, match="unreadable"):
        _sweep(out).run(_units(), Work())


@pytest.mark.parametrize("env,problem", [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE 'abc' is not a whole number"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE is 0"),
    ({"WORLD_SIZE": "2", "RANK": "one"}, "RANK 'one' is not a whole number"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK 2 is outside 0..1"),
])
def test_a_wrong_launcher_position_is_refused_in_one_line(monkeypatch, env, problem):
    monkeypatch.delenv("RANK", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(BadInput, match=problem) as refused:
        distributed_position()
    assert "\n" not in str(refused.value)
    assert distributed_position(3, 1) == (3, 1)  # given values win over the launcher's


def test_the_launcher_position_and_its_one_line_error_on_the_command_line(monkeypatch, tmp_path, capsys):
    from freeprompt.analysis.collect import distributed_position as collects_position
    from freeprompt.cli.main import main

    assert collects_position is distributed_position  # moved, not copied
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert distributed_position() == (4, 3) and Shards.of() == Shards(4, 3)
    monkeypatch.setenv("WORLD_SIZE", "abc")
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "shapes-fake-edit", "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "WORLD_SIZE 'abc'" in err and err.count("\n") == 1
    assert "Traceback" not in err


# ---------------------------------------------------------------- shards


def test_shards_split_the_units_and_their_tables_merge(tmp_path):
    units = _units(7, rows=2)
    whole = _sweep(tmp_path / "whole").run(units, Work())
    out = tmp_path / "sharded"
    for index in (2, 0, 1):
        work = Work()
        rows = _sweep(out, shards=Shards(3, index)).run(units, work)
        assert work.calls == [f"u{i}" for i in range(7) if i % 3 == index]
        assert {r["unit"] for r in rows} == set(work.calls)
    assert sorted(p.name for p in out.glob("items*")) == [f"items.shard-{i}-of-3.{ext}" for i in range(3)
                                                          for ext in ("csv", "done")]
    assert is_sharded(out) and not is_sharded(tmp_path / "whole")
    merged = all_rows(out)
    as_read = [{k: str(v) for k, v in r.items()} for r in whole]
    assert sorted(merged, key=lambda r: (r["unit"], r["part"])) == sorted(as_read, key=lambda r: (r["unit"], r["part"]))
    wait_for_shards(out, 3, poll_s=0.01)  # every marker there: returns at once


def test_process_zero_waits_for_every_shard_marker(tmp_path):
    for index in range(2):
        _sweep(tmp_path, shards=Shards(2, index)).run(_units(4), Work())
    marker = Shards(2, 1).marker(tmp_path)
    marker.unlink()
    waiter = threading.Thread(target=wait_for_shards, args=(tmp_path, 2), kwargs={"poll_s": 0.01})
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()
    marker.write_text("finished\n")
    waiter.join(5)
    assert not waiter.is_alive()


# ---------------------------------------------------------------- the runners over the sweep


def _fake_edit(pipe, source, targets, **_):
    """Solid images: the source red, every target blue (what the oracle reads as a recoloured object does not
    matter here, only the rows)."""
    targets = [targets] if isinstance(targets, str) else targets
    images = [Image.new("RGB", (64, 64), "red")] + [Image.new("RGB", (64, 64), "blue") for _ in targets]
    return SimpleNamespace(images=images, targets=images[1:])


@pytest.fixture
def fake_edits(monkeypatch):
    from freeprompt.editing import generated, real  # noqa: F401 - real imported now binds the true edit, not the fake

    calls = []

    def edit(pipe, source, targets, **kwargs):
        calls.append(source)
        return _fake_edit(pipe, source, targets, **kwargs)

    monkeypatch.setattr(generated, "edit", edit)
    return calls


def test_the_eval_runner_recomputes_a_case_whose_target_row_is_damaged(fake_edits, tmp_path):
    from freeprompt.evaluation import edit_sets, runner

    cases = edit_sets.EditSet("toy", [edit_sets.EditCase(f"case-{i}", f"a red thing {i}", ["a", "b", "c"], seed=i)
                                      for i in range(2)])
    scorers = runner.Scorers(("psnr",))
    args = (None, cases, {"fpe": object()}, tmp_path, {"dataset": "toy"}, scorers)
    assert len(runner.run_eval(*args, steps=2, guidance=3.0)) == 6 and len(fake_edits) == 2
    table = tmp_path / "items.csv"
    text = table.read_bytes()
    row = next(line for line in text.split(b"\r\n") if line.startswith(b"case-0,1,"))
    table.write_bytes(text.replace(row, row.replace(b"a red thing 0", b"a red thong 0")))
    with pytest.warns(UserWarning, match="1 damaged row"):
        runner.run_eval(*args, steps=2, guidance=3.0)
    assert fake_edits == ["a red thing 0", "a red thing 1", "a red thing 0"]  # the damaged case edited again
    rows = _quiet_rows(table)
    assert sorted((r["case"], r["target_index"]) for r in rows) == [(f"case-{c}", str(t)) for c in range(2)
                                                                   for t in range(3)]


def test_the_shapes_bench_in_two_shards_reports_every_shard(fake_edits, tmp_path):
    from freeprompt.evaluation import shapes_bench as sb

    pipe = SimpleNamespace(unet=SimpleNamespace(dtype="torch.float32"))
    items = sb.edit_items(3, 2, seed=0)
    methods = {name: SimpleNamespace(options=dict) for name in ("fpe", "plain")}
    seen = {}
    for index in (1, 0):
        ticks: list = []
        rows = sb.run_edits(pipe, items, tmp_path, 2, 3.0, methods, progress=lambda *a, t=ticks: t.append(a),
                            num_shards=2, shard_index=index)
        seen[index] = {r["id"] for r in rows}
        assert ticks[-1] == (len(seen[index]), len(seen[index]))
    assert seen == {0: {items[i].id for i in (0, 2, 4)}, 1: {items[i].id for i in (1, 3)}}
    text = sb.write_report(tmp_path, rows, None, {})
    assert "| fpe | all | 5 |" in text and "| plain | all | 5 |" in text
    assert (tmp_path / "examples.png").exists()


def test_the_ablation_in_two_shards_reports_every_shard(fake_edits, tmp_path):
    from freeprompt.evaluation import ablation as ab
    from freeprompt.evaluation import shapes_bench as sb

    items = [ab.AblationItem(e.id, e.seed, e.source_prompt, e.target_prompt, e) for e in sb.edit_items(1, 1)]
    cells = ab.grid(["self", "cross"], ["all"], [0.5])
    taken = {}
    for index in (1, 0):
        rows = ab.run_ablation(None, items, cells, tmp_path, 2, 3.0, num_shards=2, shard_index=index)
        taken[index] = sorted((r["item"], r["type"]) for r in rows)
    assert taken[0] == [(items[0].id, "self"), (items[1].id, "self")]  # every other (item, cell)
    ab.write_report(tmp_path, rows, cells, {})
    summary = json.loads((tmp_path / "run.json").read_text())["summary"]
    assert sorted((e["type"], e["n"]) for e in summary) == [("cross", 2), ("self", 2)]


# ---------------------------------------------------------------- the shipped result folders


def _units_of(folder: str, settings: dict) -> tuple[list[Unit], tuple[str, ...], str, list[str]]:
    """The units, key, table and columns of a shipped run, from its own settings (and for eval the dataset it
    names), by the runners' own unit lists."""
    from freeprompt.evaluation import ablation as ab
    from freeprompt.evaluation import edit_sets, runner
    from freeprompt.evaluation import shapes_bench as sb

    if folder.startswith("ablation"):
        items = [ab.AblationItem(*item) for item in settings["items"]]
        cells = [ab.Cell(kind, layers, float(ratio)) for kind, layers, ratio in settings["cells"]]
        return ab.cell_units(items, cells), ab.KEY, ab.TABLE, ab.FIELDS
    if folder.startswith("eval"):
        dataset = edit_sets.load(settings["dataset"], limit=settings["cases"], seed=settings["seed"])
        assert len(dataset.cases) == settings["cases"]
        fields = runner.Scorers(tuple(settings["metrics"])).fields()
        return runner.eval_units(dataset, settings["methods"]), runner.KEY, runner.TABLE, fields
    items = [SimpleNamespace(id=item[0]) for item in settings["items"]]
    return sb.edit_units(items, settings["methods"]), sb.KEY, sb.TABLE, sb.FIELDS


SHIPPED = ["ablation_shapes", "eval_shapes_fake", "eval_shapes_real", "shapes_bench", "shapes_bench_methods",
           "shapes_bench_item_seed1", "shapes_bench_item_seed2"]


@pytest.mark.parametrize("folder", SHIPPED)
def test_shipped_result_folders_read_back_whole_with_no_unit_pending(folder):
    settings = json.loads((RESULTS / folder / "settings.json").read_text())
    units, key, table, _ = _units_of(folder, settings)
    tables = run_tables(RESULTS / folder, table)
    assert tables and len({shards.count for shards, _ in tables}) == 1
    total = 0
    for shards, path in tables:
        rows = _quiet_rows(path)
        chosen = plan(rows, [u for u in units if shards.takes(u)], key)
        assert chosen.todo == [] and chosen.kept == rows and chosen.dropped == 0
        total += len(rows)
    assert total == sum(u.rows for u in units)


@pytest.mark.parametrize("folder", ["ablation_shapes", "eval_shapes_fake"])
def test_a_shipped_folder_resumes_in_a_copy_without_computing_or_rewriting_anything(tmp_path, folder):
    settings = json.loads((RESULTS / folder / "settings.json").read_text())
    units, key, table, fields = _units_of(folder, settings)
    files = ["settings.json"] + [path.name for _, path in run_tables(RESULTS / folder, table)]
    for name in files:
        shutil.copy(RESULTS / folder / name, tmp_path / name)
    nothing = Work(stop_at=0, error=AssertionError("a finished unit computed again"))
    for shards, _ in run_tables(tmp_path, table):
        rows = Sweep(tmp_path, settings, fields, key, table, shards).run(units, nothing)
        assert len(rows) == sum(u.rows for u in units if shards.takes(u))
    assert all((tmp_path / name).read_bytes() == (RESULTS / folder / name).read_bytes() for name in files)


def test_a_shipped_table_without_row_checks_resumes_its_missing_units(tmp_path):
    from freeprompt.evaluation import ablation as ab

    folder = RESULTS / "ablation_shapes"
    settings = json.loads((folder / "settings.json").read_text())
    shutil.copy(folder / "settings.json", tmp_path)
    lines = (folder / "cells.csv").read_bytes().split(b"\r\n")
    (tmp_path / "cells.csv").write_bytes(b"\r\n".join(lines[:-3] + [b""]))  # the last two rows lost
    units = _units_of("ablation_shapes", settings)[0]

    def work(unit):
        _, item, cell = unit.data
        return [{"item": item.id, "seed": item.seed, "source_prompt": item.source, "target_prompt": item.target,
                 "type": cell.type, "layers": cell.layers, "ratio": f"{cell.ratio:g}", "iou": "0.5"}]

    rows = Sweep(tmp_path, settings, ab.FIELDS, ab.KEY, ab.TABLE).run(units, work)
    assert len(rows) == 540 and [r["iou"] for r in rows[-2:]] == ["0.5", "0.5"]
    again = _quiet_rows(tmp_path / "cells.csv")  # now with row checks
    assert (tmp_path / "cells.csv").read_bytes().startswith((",".join(ab.FIELDS) + ",row_check\r\n").encode())
    shipped = _quiet_rows(folder / "cells.csv")
    kept = [{name: row[name] for name in shipped[0]} for row in again[:538]]  # the shipped columns, unchanged
    assert kept == shipped[:538] and [row_key(r, ab.KEY) for r in again] == [row_key(r, ab.KEY) for r in shipped]
    assert all(row["all_four"] == "" for row in again[:538])  # columns the shipped rows lack stay empty


# ---------------------------------------------------------------- two writers, a vanished folder, a full disk


def test_a_second_run_on_the_same_table_is_refused_while_the_first_writes(tmp_path):
    out = tmp_path / "run"
    second = []

    def work(unit):
        if unit.key == ("b",):  # the first run is in the middle of its table: a second one starts
            with pytest.raises(BadInput, match="another run is writing") as err:
                Sweep(out, {"x": 1}, ["id", "v"], ("id",)).run([Unit(("a",))], lambda u: [{"id": "a", "v": 9}])
            second.append(str(err.value))
        return [{"id": unit.key[0], "v": 1}]

    rows = Sweep(out, {"x": 1}, ["id", "v"], ("id",)).run([Unit(("a",)), Unit(("b",), index=1)], work)
    assert len(rows) == 2 and len(second) == 1 and "\n" not in second[0]
    again = Sweep(out, {"x": 1}, ["id", "v"], ("id",)).run([Unit(("a",)), Unit(("b",), index=1)], work)
    assert [(r["id"], str(r["v"])) for r in again] == [("a", "1"), ("b", "1")]  # resumed from the table


def test_a_folder_removed_during_the_run_is_one_line_and_the_rerun_resumes(tmp_path):
    import shutil

    out, removed = tmp_path / "run", []

    def work(unit):
        if unit.key == ("b",) and not removed:
            shutil.rmtree(out)
            removed.append(True)
        return [{"id": unit.key[0], "v": 1}]

    units = [Unit(("a",)), Unit(("b",), index=1)]
    with pytest.raises(BadInput, match="cannot write .*rerun the same command") as err:
        Sweep(out, {"x": 1}, ["id", "v"], ("id",)).run(units, work)
    assert "\n" not in str(err.value)
    assert len(Sweep(out, {"x": 1}, ["id", "v"], ("id",)).run(units, work)) == 2


def test_an_atomic_write_that_fails_leaves_no_temporary_and_the_old_file(tmp_path):
    from freeprompt.io.outputs import replacing, write_json

    path = tmp_path / "settings.json"
    write_json(path, {"a": 1})
    with pytest.raises(OSError):
        with replacing(path) as tmp:
            tmp.write_text("half")
            raise OSError(28, "No space left on device")
    assert json.loads(path.read_text()) == {"a": 1} and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
