"""Re-editing a source (issue #40, item 3): the time of a re-edit of one new target against the first edit of one
target, with the source kept in a ``SourceCache``. Random weights of the real architecture (no download), one
process, pairs in turn (first edit, re-edit, first edit, re-edit, ...: a fresh cache for every pair), the median of
the per-pair ratios; also the bytes the cache kept.

    python benchmarks/bench_reedit.py --arch sd15 --size 512 --steps 2 --pairs 3 --threads 2 \\
        --out benchmarks/results/reedit_sd15_cpu.json

FPE edits every step here (``--self-replace 0:1``: the most the cache has to keep); the VAE decode is left out of
both timings (``decode=False``), as in ``bench_methods.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from freeprompt.editing.generated import edit
from freeprompt.editing.methods import build_method
from freeprompt.editing.reuse import SourceCache
from freeprompt.io.outputs import write_json
from freeprompt.io.runinfo import device_description
from freeprompt.models.random import random_pipeline


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="sd15", choices=("sd15", "tiny", "sd21", "sdxl"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--method", default="fpe")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = random_pipeline(args.arch)
    method = build_method(args.method, {"self_replace": "0:1"} if args.method == "fpe" else {})

    def run(target: str, cache: SourceCache):
        return edit(pipe, "a photo of a red car", [target], method=method, seed=0, steps=args.steps,
                    height=args.size, width=args.size, progress=False, decode=False, reuse=cache)

    run("a photo of a blue car", SourceCache())  # warm-up
    pairs = []
    for _ in range(args.pairs):
        cache = SourceCache()
        first_s, _ = timed(run, "a photo of a blue car", cache)
        again_s, again = timed(run, "a photo of a green car", cache)
        assert again.params["source_reused"]
        pairs.append({"first_s": first_s, "reedit_s": again_s, "ratio": again_s / first_s, "cache_bytes": cache.bytes})
        print(f"first edit {first_s:.2f} s, re-edit {again_s:.2f} s, ratio {again_s / first_s:.3f}, "
              f"kept {cache.bytes / 2**20:.1f} MiB", flush=True)
    ratios = [p["ratio"] for p in pairs]
    report = {"arch": args.arch, "size": args.size, "steps": args.steps, "method": args.method,
              "threads": args.threads, "machine": device_description("cpu"), "pairs": pairs,
              "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
    print(f"re-edit / first edit: median {report['ratio_median']:.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
