"""Speed and memory of FPE against plain diffusers generation and a map-materialising reference.

(a) plain:       diffusers' StableDiffusionPipeline with its default SDPA processors
(b) fpe:         freeprompt.edit (FPE as SDPA(Q_src, K_src, V_tgt)), default layers (<=32x32), all steps
(c) materialise: the same edit with every attention map built explicitly (einsum + softmax), as the
                 official FPE code does (tests/reference.py)

All three denoise the same batch (one source + N targets, classifier-free guidance, output as latents: the
VAE decode is excluded from all three) from the same noise. Each (method, size) runs in its own process so its peak memory is its own (RSS on CPU,
torch.cuda.max_memory_allocated on GPU); the reported time is the median of --reps runs after one warm-up.

    python benchmarks/bench_fpe.py --arch sd15 --sizes 256 512 --steps 3 --reps 3 --out benchmarks/results/fpe_cpu.json
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

from freeprompt.io.outputs import write_json
from freeprompt.io.runinfo import device_description

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("plain", "fpe", "materialise")


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def worker(args) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from reference import reference_processors

    from freeprompt.attention import DEFAULT_LAYERS, discover_layers
    from freeprompt.diffusion import ddim_scheduler, initial_latents, latent_shape
    from freeprompt.editing.generated import edit
    from freeprompt.models.random import random_pipeline

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pipe = random_pipeline(args.arch).to(device)
    pipe.scheduler = ddim_scheduler(pipe.scheduler.config)
    prompts = ["a photo of a red car"] + [f"a photo of a {c} car" for c in ("blue", "green", "white")][: args.targets]
    shape = latent_shape(pipe, args.size, args.size)
    noise = initial_latents(0, shape, device, torch.float32)

    def run_plain():
        pipe(prompts, height=args.size, width=args.size, num_inference_steps=args.steps, guidance_scale=7.5,
             latents=noise.expand(len(prompts), -1, -1, -1), output_type="latent")

    def run_fpe():
        edit(pipe, prompts[0], prompts[1:], latents=noise, steps=args.steps, height=args.size, width=args.size,
             self_replace="0:1", progress=False, decode=False)

    def run_materialise():
        registry = discover_layers(pipe.unet)
        names = {layer.name for layer in registry.select(DEFAULT_LAYERS, "self", shape[2:])}
        state = {"edit": True}
        with reference_processors(pipe.unet, registry, names, len(prompts), False, state):
            run_plain()

    fn = {"plain": run_plain, "fpe": run_fpe, "materialise": run_materialise}[args.method]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for rep in range(args.reps + 1):
        sync()
        start = time.perf_counter()
        with torch.no_grad():
            fn()
        sync()
        if rep:  # the first run is a warm-up
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"method": args.method, "size": args.size, "times_s": times, "median_s": statistics.median(times),
            "peak_bytes": peak, "peak_kind": "cuda_max_allocated" if device.type == "cuda" else "rss"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="sd15", choices=("sd15", "tiny"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--targets", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default=_default_device())
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fpe.json")
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        print(json.dumps(worker(args)))
        return

    rows = []
    for size in args.sizes:
        for method in args.methods:
            cmd = [sys.executable, __file__, "--method", method, "--size", str(size), "--arch", args.arch,
                   "--steps", str(args.steps), "--reps", str(args.reps), "--targets", str(args.targets),
                   "--threads", str(args.threads), "--device", args.device]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"{size:>4} px {method:12} median {rows[-1]['median_s']:.2f} s  peak {rows[-1]['peak_bytes'] / 2**30:.2f} GiB",
                  flush=True)
    report = {"arch": args.arch, "device": args.device, "device_name": device_description(args.device), "steps": args.steps,
              "reps": args.reps, "prompts": 1 + args.targets, "threads": args.threads, "rows": rows, "ratios": {}}
    print("\n| size | plain (s) | fpe (s) | materialise (s) | fpe/plain | materialise/plain | peak plain / fpe / materialise (GiB) |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        by = {r["method"]: r for r in rows if r["size"] == size}
        ratio = {m: by[m]["median_s"] / by["plain"]["median_s"] for m in by if "plain" in by}
        report["ratios"][str(size)] = ratio
        peaks = " / ".join(f"{by[m]['peak_bytes'] / 2**30:.2f}" for m in METHODS if m in by)
        print(f"| {size} | " + " | ".join(f"{by[m]['median_s']:.2f}" if m in by else "-" for m in METHODS)
              + f" | {ratio.get('fpe', float('nan')):.3f} | {ratio.get('materialise', float('nan')):.3f} | {peaks} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
