"""Speed and memory of every editing method against plain diffusers generation, and against the same method
materialising its attention maps as its authors' code does.

    plain          diffusers' StableDiffusionPipeline with its default SDPA processors
    fpe            freeprompt's FPE (default layers <=32x32), SDPA(Q_src, K_src, V_tgt)
    p2p            Prompt-to-Prompt replace (cross maps in every layer, self maps in <=16x16 layers), via SDPA
    masactrl       MasaCtrl (layers 11-16), SDPA(Q_tgt, K_src, V_src)
    pnp            Plug-and-Play (features of up_blocks.1.resnets.1, queries/keys in layers 9-16)
    <method>_mat   the same edit with maps built by einsum + softmax (tests/support/method_reference.py): in every
                   attention layer for FPE, P2P and MasaCtrl (their authors hook every layer), in the edited layers
                   for PnP (its authors replace only those)

Every method edits every step, so the comparison is the cost of the edit itself. All denoise the same batch (one
source + N targets, classifier-free guidance, output as latents: the VAE decode is excluded) from the same
noise. Each (method, size) runs in its own process so its peak memory is its own (RSS on CPU,
torch.cuda.max_memory_allocated on GPU); the time is the median of --reps runs after one warm-up.

    python benchmarks/bench_methods.py --arch sd15 --sizes 256 512 --steps 1 --reps 3 --threads 1 \\
        --out benchmarks/results/methods_sd15_cpu.json
    python benchmarks/bench_methods.py --arch sdxl --sizes 1024 --methods plain fpe --steps 1 --reps 1 \\
        --alternate 5 --threads 2 --out benchmarks/results/methods_sdxl_alternating_cpu.json
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
EDITS = ("fpe", "p2p", "masactrl", "pnp")
METHODS = ("plain",) + tuple(m for e in EDITS for m in (e, f"{e}_mat"))


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def ours(name: str, steps: int):
    """The method as freeprompt runs it, editing every step."""
    from freeprompt.editing.methods import FPE, P2P, MasaCtrl, PnP

    return {"fpe": FPE(self_replace="0:1"), "p2p": P2P(cross_replace="0:1", self_replace="0:1"),
            "masactrl": MasaCtrl(steps="0:1"), "pnp": PnP(feature_steps="0:1", attention_steps="0:1")}[name]


def materialising(name: str, pipe, prompts, steps: int, latent_hw):
    """(Spec, layer names to materialise or None for all, feature module or None) of the reference for method
    ``name``, with the layers, steps and feature block our method plans for this model."""
    import torch
    from method_reference import Spec

    from freeprompt.attention import BatchLayout, discover_layers
    from freeprompt.editing.methods import MethodContext

    registry = discover_layers(pipe.unet)
    layout = BatchLayout.one_source(len(prompts) - 1)
    plan = ours(name, steps).plan(MethodContext(pipe.unet, pipe.tokenizer, tuple(prompts), layout, registry,
                                                tuple(latent_hw), steps))
    self_layers = {n for rule in plan.rules if rule.kind == "self" for n in rule.layers}
    every = set(range(steps))
    spec, only, feature = Spec(len(prompts)), None, None
    if name == "fpe":
        spec.fpe = (self_layers, every, False)
    elif name == "p2p":
        ones, ids = torch.ones(len(prompts) - 1, 77), torch.arange(77).expand(len(prompts) - 1, -1)
        spec.p2p_cross, spec.p2p_self = (every, ids, ones, ones), (self_layers, every)
    elif name == "masactrl":
        spec.masactrl = (self_layers, every)
    else:
        spec.pnp_attention = (self_layers, every)
        only, feature = self_layers, plan.features[0].module
    return spec, only, feature


def worker(args) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from method_reference import feature_hook, installed

    from freeprompt.attention import discover_layers
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

    def run_ours():
        edit(pipe, prompts[0], prompts[1:], method=ours(args.method, args.steps), latents=noise, steps=args.steps,
             height=args.size, width=args.size, progress=False, decode=False)

    def run_materialising():
        spec, only, feature = materialising(args.method.removesuffix("_mat"), pipe, prompts, args.steps, shape[2:])
        handle = feature_hook(pipe.unet, feature, spec, set(range(args.steps))) if feature else None
        try:
            with installed(pipe.unet, discover_layers(pipe.unet), spec, only=only):
                run_plain()
        finally:
            if handle:
                handle.remove()

    fn = run_plain if args.method == "plain" else run_materialising if args.method.endswith("_mat") else run_ours
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for rep in range(args.warmup + args.reps):
        sync()
        start = time.perf_counter()
        with torch.no_grad():
            fn()
        sync()
        if rep >= args.warmup:  # the first runs are warm-ups
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"method": args.method, "size": args.size, "times_s": times, "median_s": statistics.median(times),
            "peak_bytes": peak, "peak_kind": "cuda_max_allocated" if device.type == "cuda" else "rss"}


def table(report: dict, rows: list[dict], sizes) -> str:
    """Markdown: per size and method, the median time, its ratio to plain, the materialising time and its ratio
    to ours, and peak memory; fills ``report["ratios"]``."""
    lines = ["| size | method | ours (s) | ours / plain | materialising (s) | materialising / ours | "
             "peak ours / materialising (GiB) |", "|---|---|---|---|---|---|---|"]
    for size in sizes:
        by = {r["method"]: r for r in rows if r["size"] == size}
        plain = by.get("plain", {}).get("median_s")
        report["ratios"][str(size)] = {m: by[m]["median_s"] / plain for m in by if plain}
        if plain:
            lines.append(f"| {size} | plain | {plain:.2f} | 1.000 | - | - | {by['plain']['peak_bytes'] / 2**30:.2f} |")
        for m in EDITS:
            a, b = by.get(m), by.get(f"{m}_mat")
            cells = [f"{a['median_s']:.2f}" if a else "-", f"{a['median_s'] / plain:.3f}" if a and plain else "-",
                     f"{b['median_s']:.2f}" if b else "-", f"{b['median_s'] / a['median_s']:.2f}" if a and b else "-",
                     " / ".join(f"{x['peak_bytes'] / 2**30:.2f}" if x else "-" for x in (a, b))]
            lines.append(f"| {size} | {m} | " + " | ".join(cells) + " |")
    return "\n" + "\n".join(lines)


def run_worker(args, method: str, size: int) -> dict:
    """One fresh process timing ``method`` at ``size``: its worker's JSON row."""
    cmd = [sys.executable, __file__, "--method", method, "--size", str(size), "--arch", args.arch, "--steps",
           str(args.steps), "--reps", str(args.reps), "--warmup", str(args.warmup), "--targets", str(args.targets),
           "--threads", str(args.threads),
           "--device", args.device]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def alternate(args) -> None:
    """Rounds of plain and the other methods in turn, each in a fresh process; every method's time divided by the
    plain time of its own round; the report gives every round, the median ratio and its spread."""
    methods = ["plain"] + [m for m in args.methods if m != "plain"]
    report = {"arch": args.arch, "device": args.device, "device_name": device_description(args.device),
              "steps": args.steps, "reps_per_process": args.reps, "warmup_per_process": args.warmup,
              "rounds": args.alternate,
              "prompts": 1 + args.targets, "threads": args.threads, "sizes": {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        rounds: list[dict] = []
        for r in range(args.alternate):
            times = {m: run_worker(args, m, size)["median_s"] for m in methods}
            rounds.append(times)
            print(f"{size} px round {r + 1}: " + ", ".join(f"{m} {t:.2f} s" for m, t in times.items()), flush=True)
            ratios = {m: [t[m] / t["plain"] for t in rounds] for m in methods[1:]}
            report["sizes"][str(size)] = {"rounds": rounds, "ratio": {m: {
                "median": statistics.median(v), "min": min(v), "max": max(v), "per_round": v}
                for m, v in ratios.items()}}
            write_json(args.out, report)  # after every round (atomically): a stopped run keeps its finished rounds
        for m, v in ratios.items():
            print(f"{size} px {m}/plain: median {statistics.median(v):.3f} (rounds {min(v):.3f}-{max(v):.3f})")
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="sd15", choices=("sd15", "tiny", "sd21", "tiny-sd2", "sdxl", "tiny-sdxl"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones, per process")
    parser.add_argument("--targets", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default=_default_device())
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "methods.json")
    parser.add_argument("--alternate", type=int, default=0, metavar="ROUNDS",
                        help="time ROUNDS rounds of one fresh process per method in turn (plain, fpe, plain, fpe, ...: "
                             "load drift hits every method alike), each --reps timed runs; report per-round ratios")
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        print(json.dumps(worker(args)))
        return

    if args.alternate:
        alternate(args)
        return
    rows = []
    for size in args.sizes:
        for method in args.methods:
            rows.append(run_worker(args, method, size))
            print(f"{size:>4} px {method:12} median {rows[-1]['median_s']:.2f} s  "
                  f"peak {rows[-1]['peak_bytes'] / 2**30:.2f} GiB", flush=True)
    report = {"arch": args.arch, "device": args.device, "device_name": device_description(args.device),
              "steps": args.steps, "reps": args.reps, "prompts": 1 + args.targets, "threads": args.threads,
              "rows": rows, "ratios": {}}
    print(table(report, rows, args.sizes))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
