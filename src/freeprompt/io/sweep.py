"""One resumable sweep: the loop that long runs share (the shapes benchmark, the replace-step ablation,
``freeprompt eval``).

A run is a list of units (an item with a method, a case with a method, an item in an ablation cell). A unit is
named by the values of the table's key columns and writes one or more rows (eval: one per target). The sweep claims
the folder (its ``settings.json`` must match this run's), keeps the rows of finished units (finished: every row of
the unit intact; the leftover rows of an unfinished unit are dropped), computes the other units with the caller's
work function and adds each unit's rows to the table as soon as it finishes. A run killed or interrupted (Ctrl-C)
keeps every finished unit and a rerun resumes after it; a cut last row fails its check and its unit is computed
again.

Sharded: process i of K takes the units whose index % K == i, writes its own table (``items.shard-i-of-K.csv``)
and, when done, a ``.done`` marker; processes share work only through the files, so no process group is needed. K
and i come from ``--num-shards``/``--shard-index`` or the launcher's WORLD_SIZE and RANK (``distributed_position``).
"""

from __future__ import annotations

import glob
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput, first_line
from .outputs import exclusive, remove_stale_temporaries, write_json
from .tables import append_rows, cell_text, read_rows, write_rows

FRESH_FIX = "choose a new --out folder, or delete that one to start over"
POSITION_FIX = "give --num-shards and --shard-index, or launch with whole-number WORLD_SIZE and RANK"

Progress = Callable[[int, int], None]  # (units of this process handled so far, units of this process)


# ---------------------------------------------------------------- shards


@dataclass(frozen=True)
class Shards:
    """Process ``index`` of ``count``: it takes the units whose index % count == index."""

    count: int = 1
    index: int = 0

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise BadInput(f"shard index {self.index} is outside 0..{self.count - 1}",
                           "give --shard-index between 0 and --num-shards - 1")

    @classmethod
    def of(cls, num_shards: int | None = None, shard_index: int | None = None) -> Shards:
        """The given position, else the launcher's (see ``distributed_position``)."""
        return cls(*distributed_position(num_shards, shard_index))

    def takes(self, unit: Unit) -> bool:
        return unit.index % self.count == self.index

    def table(self, out_dir: Path, name: str = "items.csv") -> Path:
        """This process's table: ``name`` itself for an unsharded run, else ``<stem>.shard-i-of-K<suffix>``."""
        if self.count == 1:
            return Path(out_dir) / name
        stem, suffix = _split(name)
        return Path(out_dir) / f"{stem}.shard-{self.index}-of-{self.count}{suffix}"

    def marker(self, out_dir: Path, name: str = "items.csv") -> Path:
        """The file that says this process finished: its table's name ending in ``.done``."""
        return self.table(out_dir, name).with_suffix(".done")


def distributed_position(num_shards: int | None = None, shard_index: int | None = None) -> tuple[int, int]:
    """(num_shards, shard_index): the given values, else the launcher's WORLD_SIZE and RANK (set by torchrun and by
    ``accelerate launch`` for several processes), else (1, 0). Values that cannot be a position are refused in one
    line."""
    if num_shards is None and shard_index is None:
        world = _whole(os.environ.get("WORLD_SIZE"), "the launcher's WORLD_SIZE", 1)
        if world < 1:
            raise BadInput(f"the launcher's WORLD_SIZE is {world}, not a number of processes", POSITION_FIX)
        if world == 1:
            return 1, 0
        rank = _whole(os.environ.get("RANK"), "the launcher's RANK", 0)
        if not 0 <= rank < world:
            raise BadInput(f"the launcher's RANK {rank} is outside 0..{world - 1}", POSITION_FIX)
        return world, rank
    shards = Shards(_whole(num_shards, "--num-shards", 1), _whole(shard_index, "--shard-index", 0))
    return shards.count, shards.index


def _whole(value, name: str, default: int) -> int:
    text = str(value).strip() if value is not None else ""
    try:
        return int(text) if text else default
    except ValueError:
        raise BadInput(f"{name} {text!r} is not a whole number", POSITION_FIX) from None


def _split(name: str) -> tuple[str, str]:
    path = Path(name)
    return path.stem, path.suffix


def run_tables(out_dir: Path, name: str = "items.csv") -> list[tuple[Shards, Path]]:
    """The tables of a run in ``out_dir`` with their shard positions: the unsharded one, and every shard's in shard
    order."""
    stem, suffix = _split(name)
    pattern = re.compile(rf"{re.escape(stem)}\.shard-(\d+)-of-(\d+){re.escape(suffix)}")
    found = []
    for path in Path(out_dir).glob(f"{glob.escape(stem)}*{glob.escape(suffix)}"):
        match = pattern.fullmatch(path.name)
        if path.name == name:
            found.append(((1, 0), path))
        elif match and int(match[1]) < int(match[2]):
            found.append(((int(match[2]), int(match[1])), path))
    return [(Shards(*position), path) for position, path in sorted(found)]


def all_rows(out_dir: Path, name: str = "items.csv") -> list[dict]:
    """Every shard's intact rows (a run's whole table when it was not sharded)."""
    return [row for _, path in run_tables(out_dir, name) for row in read_rows(path)]


def is_sharded(out_dir: Path, name: str = "items.csv") -> bool:
    return any(shards.count > 1 for shards, _ in run_tables(out_dir, name))


def wait_for_shards(out_dir: Path, num_shards: int, name: str = "items.csv", poll_s: float = 5.0) -> None:
    """Process 0 of a sharded run waits until every shard has written its table and its ``.done`` marker."""
    markers = [Shards(num_shards, i).marker(out_dir, name) for i in range(num_shards)]
    while not all(m.exists() for m in markers):
        time.sleep(poll_s)


# ---------------------------------------------------------------- the folder


def claim(out_dir: Path, settings: dict, name: str = "items.csv", shards: Shards = Shards()) -> None:
    """Refuse to resume into a folder whose results were made with other settings (they would be summarised under
    this run's parameters) or split into another number of shards (a unit finished in one split's table would be
    computed again in the other's, and reported twice); otherwise record this run's settings. Killed runs'
    temporaries are removed first."""
    out_dir, path = Path(out_dir), Path(out_dir) / "settings.json"
    remove_stale_temporaries(out_dir)
    settings = json.loads(json.dumps(settings))
    tables = run_tables(out_dir, name)
    if path.exists():
        saved = _saved_settings(path)
        changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if changed:
            raise BadInput(f"{out_dir} holds results made with other settings ({', '.join(changed)})", FRESH_FIX)
    elif tables:
        raise BadInput(f"{out_dir} holds results without a settings.json, so they cannot be resumed", FRESH_FIX)
    other = sorted({s.count for s, _ in tables} - {shards.count})
    if other:
        raise BadInput(f"{out_dir} holds a run split into {other[0]} shard(s), not {shards.count}",
                       f"resume it with --num-shards {other[0]}, or {FRESH_FIX}")
    write_json(path, settings)


def _saved_settings(path: Path) -> dict:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BadInput(f"{path} is unreadable ({first_line(err)})", FRESH_FIX) from None
    if not isinstance(saved, dict):
        raise BadInput(f"{path} holds no settings", FRESH_FIX)
    return saved


# ---------------------------------------------------------------- units and plans


@dataclass(frozen=True)
class Unit:
    """One piece of work: ``key`` the values of the table's key columns (compared as the table holds them, as
    text), ``rows`` how many rows it writes, ``index`` its position for sharding (units that share one stay in one
    process), ``data`` what the work function needs."""

    key: tuple
    rows: int = 1
    index: int = 0
    data: Any = field(default=None, compare=False)

    def text_key(self) -> tuple[str, ...]:
        return tuple(cell_text(v) for v in self.key)


@dataclass
class Plan:
    """What a process finds in its table: the rows to keep (of finished units, and of no unit of this run, in
    table order), its units (in run order), those still to compute, and how many leftover rows of unfinished
    units are dropped."""

    kept: list[dict]
    units: list[Unit]
    todo: list[Unit]
    dropped: int

    @property
    def finished(self) -> int:
        return len(self.units) - len(self.todo)


def plan(rows: list[dict], units: list[Unit], key: tuple[str, ...]) -> Plan:
    """Which of ``units`` are finished in ``rows`` (the intact rows of a table, keyed by the columns ``key``): those
    with exactly the rows they write. The others are computed again, their leftover rows dropped."""
    wanted: Counter = Counter()
    for unit in units:
        wanted[unit.text_key()] += unit.rows
    found = Counter(row_key(row, key) for row in rows)
    finished = {k for k, n in wanted.items() if found[k] == n}
    kept = [row for row in rows if row_key(row, key) in finished or row_key(row, key) not in wanted]
    todo = [unit for unit in units if unit.text_key() not in finished]
    return Plan(kept, units, todo, len(rows) - len(kept))


def row_key(row: dict, key: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(cell_text(row.get(column)) for column in key)


# ---------------------------------------------------------------- the run


class TableWriter:
    """A process's own table. The first write replaces the file whole with the kept rows and the new ones (under a
    temporary name, then renamed), which drops damaged and leftover rows and gives a table written before row
    checks its check column; later writes append the new rows."""

    def __init__(self, path: Path, fields: list[str], rows: list[dict]):
        self.path, self.fields, self.rows, self.replaced = Path(path), list(fields), list(rows), False

    def add(self, rows: list[dict]) -> None:
        if self.replaced:
            append_rows(self.path, rows, self.fields)
        else:
            write_rows(self.path, self.rows + rows, self.fields)
            self.replaced = True
        self.rows += rows


@dataclass
class Sweep:
    """A resumable run in ``out_dir`` made with ``settings``: a table of ``fields`` (``table``, or this shard's
    table), whose rows belong to units by the columns ``key``."""

    out_dir: Path
    settings: dict
    fields: list[str]
    key: tuple[str, ...]
    table: str = "items.csv"
    shards: Shards = field(default_factory=Shards)

    @property
    def path(self) -> Path:
        return self.shards.table(self.out_dir, self.table)

    def start(self, units: list[Unit]) -> Plan:
        """Claim the folder and plan this process's units from its table."""
        out_dir = Path(self.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        claim(out_dir, self.settings, self.table, self.shards)
        self.shards.marker(out_dir, self.table).unlink(missing_ok=True)
        return plan(read_rows(self.path), [u for u in units if self.shards.takes(u)], self.key)

    def run(self, units: list[Unit], work: Callable[[Unit], list[dict]],
            progress: Progress | None = None) -> list[dict]:
        """Compute this process's unfinished units with ``work(unit) -> rows``, adding each unit's rows to the
        table as it finishes; ``progress(done, total)`` after each of this process's units (finished ones too).
        Returns this process's rows; ends with its ``.done`` marker."""
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(f".{self.path.name}.lock")
        with exclusive(lock, str(self.path)):
            chosen = self.start(units)
            pending = {unit.text_key() for unit in chosen.todo}
            writer = TableWriter(self.path, self.fields, chosen.kept)
            for done, unit in enumerate(chosen.units, 1):
                if unit.text_key() in pending:
                    rows = self.checked(unit, work(unit))
                    with _writing(self.path):
                        writer.add(rows)
                if progress:
                    progress(done, len(chosen.units))
            with _writing(self.path):
                self.shards.marker(self.out_dir, self.table).write_text("finished\n")
        return writer.rows

    def checked(self, unit: Unit, rows: list[dict]) -> list[dict]:
        """``rows``, if they are the unit's (its key, its number of rows): other rows would never count as the
        unit finished, and it would be computed again on every resume."""
        keys = {row_key(row, self.key) for row in rows}
        if len(rows) != unit.rows or keys - {unit.text_key()}:
            raise ValueError(f"unit {unit.text_key()} gave {len(rows)} row(s) keyed {sorted(keys)}, not {unit.rows}")
        return rows


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A table that cannot be written (its folder removed during the run, a full disk) is a one-line error: the
    finished units are on disk, and a rerun resumes after them."""
    try:
        yield
    except OSError as err:
        raise BadInput(f"cannot write {path} ({first_line(err)})", "check that its folder still exists and has "
                       "space, then rerun the same command to resume") from None
