"""Edits per hour of ``freeprompt eval``: every target of a source in one batch against one target per call.

Car-fake-edit's shape (one source, 27 targets) on a model: the same 27 edits made as one batch (28 prompts) and as
27 calls of one target each, every call with its source; seconds per edit and edits per hour, median of --reps.

    python benchmarks/bench_eval_batching.py --model shapes --steps 50 --reps 3 --threads 1 \\
        --out benchmarks/results/eval_batching_shapes_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from freeprompt.io.outputs import write_json
from freeprompt.io.runinfo import device_description, package_versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--targets", type=int, default=27)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from freeprompt.editing.generated import edit
    from freeprompt.evaluation.edit_sets import car_fake_edit
    from freeprompt.models.loading import load_pipeline

    torch.set_num_threads(args.threads)
    loaded = load_pipeline(args.model, device=args.device)
    case = car_fake_edit().cases[0]
    targets = case.targets[: args.targets]
    guidance = loaded.setting("guidance", None, 7.5)

    def batched():
        edit(loaded.pipe, case.source, targets, seed=0, steps=args.steps, guidance=guidance, progress=False)

    def one_by_one():
        for target in targets:
            edit(loaded.pipe, case.source, [target], seed=0, steps=args.steps, guidance=guidance, progress=False)

    result = {"model": loaded.info, "device": device_description(loaded.info["device"]), "steps": args.steps,
              "targets": len(targets), "threads": args.threads, "versions": package_versions()}
    for name, fn in (("batched", batched), ("one_target_per_call", one_by_one)):
        fn()  # warm-up
        times = []
        for _ in range(args.reps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        per_edit = statistics.median(times) / len(targets)
        result[name] = {"times_s": times, "seconds_per_edit": per_edit, "edits_per_hour": 3600 / per_edit}
        print(f"{name:20} {per_edit:.3f} s per edit, {3600 / per_edit:.0f} edits per hour", flush=True)
    result["speedup"] = result["one_target_per_call"]["seconds_per_edit"] / result["batched"]["seconds_per_edit"]
    print(f"batching is {result['speedup']:.2f}x faster")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, result)


if __name__ == "__main__":
    main()
