"""Result tables of long runs (benchmarks, ablations): one CSV row per finished item, rewritten atomically after
each, and a ``settings.json`` that a resumed run must match."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import warnings
from pathlib import Path

from ..errors import BadInput
from .outputs import remove_stale_temporaries, temporary_beside, write_json

FRESH_FIX = "choose a new --out folder, or delete that one to start over"


def claim_folder(out_dir: Path, settings: dict, table: str = "items.csv") -> None:
    """Refuse to resume into a folder whose results were made with other settings (they would be summarised
    under this run's parameters); otherwise record this run's settings."""
    path = Path(out_dir) / "settings.json"
    remove_stale_temporaries(Path(out_dir))
    settings = json.loads(json.dumps(settings))
    if path.exists():
        saved = json.loads(path.read_text())
        changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if changed:
            raise BadInput(f"{out_dir} holds results made with other settings ({', '.join(changed)})", FRESH_FIX)
    elif (Path(out_dir) / table).exists():
        raise BadInput(f"{out_dir} holds results without a settings.json, so they cannot be resumed", FRESH_FIX)
    write_json(path, settings)


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
    tmp = temporary_beside(Path(path))
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*fields, CHECK], extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            cells = {k: row.get(k) for k in fields}
            writer.writerow({**cells, CHECK: row_check([_cell(cells[k]) for k in fields])})
    os.replace(tmp, path)


def row_check(cells: list[str]) -> str:
    return hashlib.sha256("\x1f".join(cells).encode()).hexdigest()[:12]


def _cell(value) -> str:
    return "" if value is None else str(value)


def _intact(row: dict) -> bool:
    """Every column present and, in a table with checks, the check right (tables written before checks: the first
    part only)."""
    if None in row or any(v is None for v in row.values()):  # extra cells, or cells missing at the end
        return False
    if CHECK not in row:
        return True
    return row[CHECK] == row_check([row[k] for k in row if k != CHECK])
