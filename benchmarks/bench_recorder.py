"""Cost of recording attention maps for the probing analysis.

(a) throughput: samples per minute of dataset collection's generation loop (classifier-free guidance, DDIM,
    output as latents, no VAE decode) with the recorder on all cross-attention layers (the target word's map)
    against the same loop without it, same prompts and noise. Plain and recording runs alternate in one
    process and the medians are compared (ratios from one run). Target: recording <= 1.15x plain.
(b) peak memory: one batch recording the self-attention maps of the layers with the most tokens (4096 at
    512 px on SD1.5; block-pooled to 256x256) against plain generation, each in its own process (CUDA: max
    allocated; CPU: peak RSS of the process, which includes the model).

    python benchmarks/bench_recorder.py --arch tiny --steps 3 --reps 3
    python benchmarks/bench_recorder.py --arch sd15 --size 512 --steps 3 --batch 4 --device cuda
    python benchmarks/bench_recorder.py --arch shapes      # the fixture model, when installed

Writes JSON (--out) and a Markdown table beside it (.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from freeprompt.analysis.words import PAPER_COLORS as COLORS
from freeprompt.io.outputs import write_json
from freeprompt.io.runinfo import device_description

ROOT = Path(__file__).resolve().parents[1]


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _pipeline(args):
    import torch

    from freeprompt.diffusion import ddim_scheduler

    if args.arch == "shapes":
        from freeprompt.models.loading import load_pipeline

        pipe = load_pipeline("shapes", device=args.device).pipe
    else:
        from freeprompt.models.random import random_pipeline

        pipe = random_pipeline(args.arch).to(torch.device(args.device))
    pipe.scheduler = ddim_scheduler(pipe.scheduler.config)
    return pipe


def _inputs(pipe, args):
    import torch

    from freeprompt.attention.tokens import word_token_indices
    from freeprompt.diffusion import encode_prompts, initial_latents, latent_shape

    noun = "circle" if args.arch == "shapes" else "car"
    prompts = [f"a {COLORS[i % len(COLORS)]} {noun}" for i in range(args.batch)]
    tokens = [word_token_indices(pipe.tokenizer, p, COLORS[i % len(COLORS)]) for i, p in enumerate(prompts)]
    size = args.size or None
    shape = latent_shape(pipe, size, size)
    device, dtype = pipe.unet.device, pipe.unet.dtype
    noise = torch.cat([initial_latents(i, shape, device, dtype) for i in range(args.batch)])
    emb = encode_prompts(pipe, prompts, "", True, device)
    return prompts, tokens, noise, emb, shape


def speed_worker(args) -> dict:
    import torch

    from freeprompt.attention.recorder import record_attention
    from freeprompt.diffusion import sample

    torch.set_num_threads(args.threads)
    pipe = _pipeline(args)
    prompts, tokens, noise, emb, shape = _inputs(pipe, args)
    device = pipe.unet.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def plain():
        return sample(pipe.unet, pipe.scheduler, noise, emb, args.steps, 7.5)

    def cross(rec):
        rec.reset(tokens=tokens)  # as dataset collection does per batch, with the recorder installed once
        sample(pipe.unet, pipe.scheduler, noise, emb, args.steps, 7.5, hooks=[rec])
        return rec.maps()

    def timed(fn, *a):
        sync()
        start = time.perf_counter()
        with torch.no_grad():
            fn(*a)
        sync()
        return time.perf_counter() - start

    times = {"plain": [], "cross": []}
    for rep in range(args.reps + 1):  # alternating; the first round is a warm-up
        t_plain = timed(plain)
        with record_attention(pipe, kind="cross", layers="all", tokens=tokens, latent_hw=tuple(shape[2:])) as rec:
            t_cross = timed(cross, rec)
        if rep:
            times["plain"].append(t_plain)
            times["cross"].append(t_cross)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"times_s": times, "median_s": med, "ratio_cross_over_plain": med["cross"] / med["plain"],
            "samples_per_min": {k: 60.0 * args.batch / v for k, v in med.items()},
            "cross_layers": 16, "latent_hw": list(shape[2:])}


def memory_worker(args) -> dict:
    import torch

    from freeprompt.attention import discover_layers
    from freeprompt.attention.recorder import record_attention
    from freeprompt.diffusion import sample

    torch.set_num_threads(args.threads)
    pipe = _pipeline(args)
    _, _, noise, emb, shape = _inputs(pipe, args)
    device = pipe.unet.device
    registry = discover_layers(pipe.unet)
    most = max(layer.tokens(tuple(shape[2:])) for layer in registry.of_kind("self"))
    largest = [layer for layer in registry.of_kind("self") if layer.tokens(tuple(shape[2:])) == most]
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.no_grad():
        if args.mode == "plain":
            sample(pipe.unet, pipe.scheduler, noise, emb, args.steps, 7.5)
        else:
            with record_attention(pipe, kind="self", layers=largest, latent_hw=tuple(shape[2:])) as rec:
                sample(pipe.unet, pipe.scheduler, noise, emb, args.steps, 7.5, hooks=[rec])
                maps = rec.maps()
            assert all(m.shape[-1] <= 256 for m in maps.values())
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak, kind = torch.cuda.max_memory_allocated() - base, "cuda_max_allocated_above_model"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "rss_peak_process"
    return {"mode": args.mode, "peak_bytes": peak, "peak_kind": kind, "seconds": seconds,
            "self_layers": [layer.index for layer in largest], "tokens": most}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="tiny", choices=("tiny", "sd15", "shapes"))
    parser.add_argument("--size", type=int, default=0, help="image side in px [the model's default]")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    parser.add_argument("--device", default=_default_device())
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "recorder.json")
    parser.add_argument("--worker", choices=("speed", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("plain", "self"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(speed_worker(args) if args.worker == "speed" else memory_worker(args)))
        return
    if args.arch == "shapes":
        from freeprompt.models.loading import fixture_path

        if not (fixture_path("shapes") / "model_index.json").exists():
            print("the shapes fixture model is not installed; nothing to measure", file=sys.stderr)
            sys.exit(0)

    def run(*extra):
        cmd = [sys.executable, __file__, "--arch", args.arch, "--size", str(args.size), "--steps", str(args.steps),
               "--batch", str(args.batch), "--reps", str(args.reps), "--threads", str(args.threads),
               "--device", args.device, *extra]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1])

    speed = run("--worker", "speed")
    memory = {} if args.skip_memory else {mode: run("--worker", "memory", "--mode", mode) for mode in ("plain", "self")}
    report = {"arch": args.arch, "device": args.device, "device_name": device_description(args.device),
              "steps": args.steps, "batch": args.batch, "reps": args.reps, "threads": args.threads,
              "latent_hw": speed["latent_hw"], "speed": speed, "memory": memory}
    lines = [
        f"Recorder benchmark: {args.arch}, {report['device_name']}, latents {speed['latent_hw'][0]}x"
        f"{speed['latent_hw'][1]}, batch {args.batch}, {args.steps} steps, guidance 7.5, median of {args.reps}.",
        "",
        "| generation | median (s) | samples/min | x plain |",
        "|---|---:|---:|---:|",
        f"| plain | {speed['median_s']['plain']:.3f} | {speed['samples_per_min']['plain']:.1f} | 1.000 |",
        f"| recording 16 cross maps | {speed['median_s']['cross']:.3f} | {speed['samples_per_min']['cross']:.1f} | "
        f"{speed['ratio_cross_over_plain']:.3f} |",
    ]
    if memory:
        m = memory["self"]
        lines += ["", f"| peak memory ({m['peak_kind']}) | MiB |", "|---|---:|",
                  f"| plain | {memory['plain']['peak_bytes'] / 2**20:.0f} |",
                  f"| recording self maps of layers {m['self_layers']} ({m['tokens']} tokens) | "
                  f"{m['peak_bytes'] / 2**20:.0f} |"]
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(f"\nwrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
