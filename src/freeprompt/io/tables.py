"""Result tables of long runs (benchmarks, ablations): one CSV row per finished item, rewritten atomically after
each, and a ``settings.json`` that a resumed run must match."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from ..errors import BadInput
from .outputs import temporary_beside, write_json

FRESH_FIX = "choose a new --out folder, or delete that one to start over"


def claim_folder(out_dir: Path, settings: dict, table: str = "items.csv") -> None:
    """Refuse to resume into a folder whose results were made with other settings (they would be summarised
    under this run's parameters); otherwise record this run's settings."""
    path = Path(out_dir) / "settings.json"
    settings = json.loads(json.dumps(settings))
    if path.exists():
        saved = json.loads(path.read_text())
        changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if changed:
            raise BadInput(f"{out_dir} holds results made with other settings ({', '.join(changed)})", FRESH_FIX)
    elif (Path(out_dir) / table).exists():
        raise BadInput(f"{out_dir} holds results without a settings.json, so they cannot be resumed", FRESH_FIX)
    write_json(path, settings)


def read_rows(path: Path) -> list[dict]:
    """The rows of a result table, or none if it does not exist yet."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict], fields: list[str]) -> None:
    """Write the whole table under a temporary name, then rename: a reader never sees half a table."""
    tmp = temporary_beside(Path(path))
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
