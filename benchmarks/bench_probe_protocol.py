"""How long the paper's probing protocol (Tables 6-9, the ``paper`` preset) takes on a model: dataset collection
is timed per sample and step on a few items of a cross-attention dataset and a self-attention dataset (the real
``collect``, which writes shards), then extrapolated to the preset's sample counts at the paper's 50 steps.
Probe training is not included (minutes on one CPU thread per experiment at the paper's sizes).

    python benchmarks/bench_probe_protocol.py --arch sd15 --size 512 --steps 2 --items 4
    python benchmarks/bench_probe_protocol.py --arch sd15 --size 512 --device cuda     # on a GPU

``--arch sd15`` is SD1.5's architecture with random weights (the timing does not depend on the weights). Each
dataset is collected twice: once to warm up, once timed. Writes JSON (--out) and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from freeprompt.analysis.collect import CollectOptions, collect
from freeprompt.analysis.protocol import DEFAULT_EXPERIMENTS, dataset_names, preset
from freeprompt.analysis.specs import build_spec
from freeprompt.io.outputs import write_json
from freeprompt.io.runinfo import device_description

ROOT = Path(__file__).resolve().parents[1]
PAPER_STEPS = 50


def preset_samples(name: str = "paper") -> dict[str, int]:
    """Samples per dataset of the preset's experiments at their default seed counts."""
    config = preset(name)
    seeds = config.get("seeds") or {}
    names = dataset_names(DEFAULT_EXPERIMENTS)
    return {n: len(build_spec(n, config["vocabulary"], seeds.get(n)).items()) for n in names}


def time_dataset(pipe, name: str, args) -> float:
    """Seconds per sample and denoising step of collecting ``name`` (the second of two runs)."""
    spec = build_spec(name, "paper", 1)
    spec.classes = list(spec.classes)[:args.items]  # a few items of the same kind: one seed, the first classes
    options = CollectOptions(steps=args.steps, batch_size=args.items, height=args.size, width=args.size)
    times = []
    for _ in range(2):
        folder = Path(tempfile.mkdtemp(prefix="bench-probe-"))
        try:
            start = time.perf_counter()
            collect(pipe, spec, folder, options)
            times.append(time.perf_counter() - start)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return times[-1] / (args.items * args.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="sd15", choices=("tiny", "sd15"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--items", type=int, default=4, help="items per timed collection (one batch)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "probe_protocol.json")
    args = parser.parse_args()

    import torch

    from freeprompt.models.random import random_pipeline

    torch.set_num_threads(args.threads)
    pipe = random_pipeline(args.arch).to(torch.device(args.device))
    per_step = {"color": time_dataset(pipe, "color", args), "self_color": time_dataset(pipe, "self_color", args)}
    samples = preset_samples("paper")
    total_s = sum(n * PAPER_STEPS * per_step["self_color" if name.startswith("self_") else "color"]
                  for name, n in samples.items())
    report = {"arch": args.arch, "size": args.size, "steps_timed": args.steps, "items": args.items,
              "threads": args.threads, "device": device_description(args.device),
              "seconds_per_sample_step": per_step, "paper_preset_samples": samples,
              "paper_steps": PAPER_STEPS, "collection_hours_extrapolated": total_s / 3600}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    lines = ["| dataset kind | s per sample-step | s per sample at 50 steps |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:.2f} | {v * PAPER_STEPS:.1f} |" for k, v in per_step.items()]
    lines.append(f"\nThe paper preset: {sum(samples.values())} samples ({samples}); collection extrapolated to "
                 f"{total_s / 3600:.1f} h on {report['device']} ({args.threads} threads).")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
