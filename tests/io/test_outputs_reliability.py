"""Issue #29 for run folders' files: killed runs' temporaries are cleaned (fresh ones kept), and run.json is strict
JSON."""

from __future__ import annotations

import json
import os
import time

from freeprompt.io.outputs import remove_stale_temporaries, write_json


def test_stale_temporaries_of_killed_runs_are_removed_and_fresh_ones_kept(tmp_path):
    old = time.time() - 2 * 3600
    for name in (".out.abc.partial", ".items.csv.tmp-123-456", ".k1.x.tmp"):
        path = tmp_path / name
        path.mkdir() if name.endswith("partial") else path.write_text("half")
        os.utime(path, (old, old))
    (tmp_path / ".out.fresh.partial").mkdir()
    (tmp_path / "items.csv").write_text("kept")
    assert remove_stale_temporaries(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.fresh.partial", "items.csv"]


def test_run_json_is_strict_json(tmp_path):
    write_json(tmp_path / "run.json", {"psnr": float("nan"), "nested": [float("inf"), 1.5], "ok": {"x": -float("inf")}})

    def refuse(name):
        raise AssertionError(f"{name} in run.json")

    data = json.loads((tmp_path / "run.json").read_text(), parse_constant=refuse)
    assert data == {"psnr": None, "nested": [None, 1.5], "ok": {"x": None}}
