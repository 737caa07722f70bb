"""Result tables of long runs (benchmarks, ablations, evaluations): CSV rows that each end with a check of their
cells, so a damaged row is found and computed again. A table is written whole under a temporary name and renamed,
or grows by whole rows appended in one write; a reader never sees half a table, at most a cut last row that fails
its check."""

from __future__ import annotations

import csv
import hashlib
import os
import warnings
from io import StringIO
from pathlib import Path

from .outputs import replacing

CHECK = "row_check"  # the last column: a digest of the row's other cells, so a damaged row is found and redone


def read_rows(path: Path) -> list[dict]:
    """The intact rows of a result table (none if it does not exist yet). Rows that fail their check (cut short,
    edited, or garbled) are dropped with a warning that counts them, so a resumed run computes them again."""
    if not Path(path).exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (csv.Error, UnicodeDecodeError) as err:
        warnings.warn(f"{path} is unreadable ({err}); its rows will be recomputed", stacklevel=2)
        return []
    good = [r for r in rows if _intact(r)]
    if len(good) < len(rows):
        warnings.warn(f"{len(rows) - len(good)} damaged row(s) in {path} will be recomputed", stacklevel=2)
    for row in good:
        row.pop(CHECK, None)
    return good


def write_rows(path: Path, rows: list[dict], fields: list[str]) -> None:
    """Write the whole table under a temporary name, then rename: a reader never sees half a table. Each row ends
    with its check."""
    with replacing(Path(path)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        f.write(table_text(rows, fields))


def append_rows(path: Path, rows: list[dict], fields: list[str]) -> None:
    """Append ``rows`` (each with its check) to a table that ``write_rows`` wrote with the same ``fields``, as
    whole lines in one write, flushed to disk before returning. A process killed in the write leaves at most a
    cut last row, which fails its check."""
    data = table_text(rows, fields, header=False).encode("utf-8")
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def table_text(rows: list[dict], fields: list[str], header: bool = True) -> str:
    """The CSV text of ``rows`` (only ``fields``, in that order, then the check), with the header line or without."""
    buffer = StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=[*fields, CHECK], extrasaction="ignore")
    if header:
        writer.writeheader()
    for row in rows:
        cells = {k: row.get(k) for k in fields}
        writer.writerow({**cells, CHECK: row_check([cell_text(cells[k]) for k in fields])})
    return buffer.getvalue()


def row_check(cells: list[str]) -> str:
    return hashlib.sha256("\x1f".join(cells).encode()).hexdigest()[:12]


def cell_text(value) -> str:
    """A cell as the table holds it (and reads it back): None as empty, anything else as ``str``."""
    return "" if value is None else str(value)


def _intact(row: dict) -> bool:
    """Every column present and, in a table with checks, the check right (tables written before checks: the first
    part only)."""
    if None in row or any(v is None for v in row.values()):  # extra cells, or cells missing at the end
        return False
    if CHECK not in row:
        return True
    return row[CHECK] == row_check([row[k] for k in row if k != CHECK])
