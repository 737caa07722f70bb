"""Time to a usage error: how long ``freeprompt`` takes to refuse a bad command line, for this checkout and, given
``--before SRC`` (the ``src`` folder of an older checkout, e.g. a ``git worktree`` of an earlier commit), for that
one, run alternately (before, after, before, after, ...: each a fresh process), so that load drift hits both.

    git worktree add /tmp/fp-before 6f2d93d
    python benchmarks/bench_usage_error.py --before /tmp/fp-before/src --repeats 7 \
        --out benchmarks/results/usage_error_cpu.json

Every case must exit with status 2 and print one line on stderr; the report gives per-case medians and the median
of the per-pair ratios (after / before)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

EDIT = ["edit", "-s", "a red circle", "-t", "a blue circle", "-m", "shapes", "-o", "{out}"]
CASES = {
    "unknown option": EDIT + ["--bogus"],
    "a number that is not one": EDIT + ["--steps", "abc"],
    "a reversed step range": EDIT + ["--self-replace", "0.9:0.2"],
    "an unknown method": ["eval", "shapes-fake-edit", "-o", "{out}", "--method", "sdedit"],
}


def run_once(src: Path, argv: list[str]) -> tuple[float, int, str]:
    """(seconds, exit status, stderr) of ``python -m freeprompt argv`` importing freeprompt from ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        args = [a.format(out=Path(tmp) / "out") for a in argv]
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "freeprompt", *args], env=env, capture_output=True, text=True)
        return time.perf_counter() - start, done.returncode, done.stderr


def measure(sources: dict[str, Path], repeats: int) -> dict:
    """Per case and source: every time, the median; the per-pair ratios against the first source."""
    report = {}
    for case, argv in CASES.items():
        times: dict[str, list[float]] = {name: [] for name in sources}
        for _ in range(repeats):
            for name, src in sources.items():
                seconds, status, err = run_once(src, argv)
                lines = [line for line in err.splitlines() if line.strip()]
                if status != 2 or len(lines) != 1:
                    raise SystemExit(f"{name}: {case}: exit {status}, stderr {err!r}")
                times[name].append(seconds)
        entry = {name: {"median_s": statistics.median(t), "times_s": [round(x, 3) for x in t]}
                 for name, t in times.items()}
        if len(sources) == 2:
            first, second = list(times)
            ratios = [b / a for a, b in zip(times[first], times[second])]
            entry["ratio_median"] = statistics.median(ratios)
        report[case] = entry
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="the src folder of an older checkout to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write the report here as JSON")
    args = parser.parse_args()
    sources = ({"before": args.before} if args.before else {}) | {"after": ROOT / "src"}
    from freeprompt.io.runinfo import device_description

    report = {"machine": device_description("cpu"), "repeats": args.repeats, "cases": measure(sources, args.repeats)}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
