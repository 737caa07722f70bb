"""Speed of the joint-attention edits on diffusion transformers (issue #38, item 7) against plain diffusers
generation, and against FPE materialising its joint maps.

    plain     diffusers' own StableDiffusion3Pipeline / FluxPipeline with their default attention processors
    loop      freeprompt's sampling loop with no edit (the plain method): what the loop itself costs beside diffusers'
    fpe       freeprompt's FPE, --fpe-joint row (every joint layer, every step): SDPA(Q_src, K_src, V_tgt) over the row
    fpe_image FPE, --fpe-joint image (two SDPA calls merged by their log-sum-exp)
    masactrl  MasaCtrl's analogue: the target's image tokens attend to the source's image keys and values
    p2p       P2P's word swap on the image-to-text block of every joint layer
    fpe_mat   FPE's row edit with the joint maps built whole (einsum + softmax; tests/support/joint_reference.py)

The models are the real architectures with random weights (``models.random_transformers.reduced``): the real width,
heads, patching and text length (SD3-medium: 1536 wide, 24 heads, 77 + 256 text tokens; FLUX.1-dev: 3072 wide, 24
heads, 512 text tokens, guidance embedded), fewer blocks than the real 24 (19 double + 38 single) so that they fit
this machine; every block costs what the real model's does, so the ratios hold per block. One source + one target;
SD3 with classifier-free guidance (4 rows), FLUX with its embedded guidance (2 rows); the VAE decode excluded.
Rounds of one fresh process per method in turn (plain, fpe, ..., plain, fpe, ...), the time of each divided by the
plain time of its own round, so that a shared machine's drift hits every method alike.

    python benchmarks/bench_transformers.py --family sd3 --size 512 --depth 2 --rounds 3 \\
        --out benchmarks/results/transformers_sd3_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from freeprompt.io.outputs import write_json
from freeprompt.io.runinfo import device_description

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("plain", "loop", "fpe", "fpe_image", "masactrl", "p2p", "fpe_mat")
PROMPTS = ["a photo of a red car", "a photo of a blue car"]


def method(name: str):
    from freeprompt.editing.methods import FPE, P2P, MasaCtrl, Plain

    return {"loop": Plain(), "fpe": FPE(self_replace="0:1"), "fpe_image": FPE(self_replace="0:1", joint="image"),
            "masactrl": MasaCtrl(steps="0:1", layers="all"), "p2p": P2P(cross_replace="0:1")}[name]


def materialising(pipe, guided: bool):
    """Processors that build every joint map whole and give the target's image rows the source's row (FPE row)."""
    from joint_reference import reference

    from freeprompt.attention import discover_layers
    from freeprompt.diffusion.denoisers import denoiser_for

    denoiser = denoiser_for(pipe)
    sources = (0, 1, 2, 2) if guided else (0, 0)  # the conditional half is edited (FLUX: no unconditional half)

    def processor(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None, **_):
        return reference(attn, hidden_states, encoder_hidden_states, image_rotary_emb, "row", sources, None,
                         denoiser.text_tokens())

    return {layer.processor_key: processor for layer in discover_layers(pipe.transformer).of_kind("joint")}


def worker(args) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from freeprompt.attention import installed_processors
    from freeprompt.editing.generated import edit
    from freeprompt.models.random_transformers import reduced

    torch.set_num_threads(args.threads)
    pipe = reduced(args.family, args.depth, args.single)
    guidance = 7.0 if args.family == "sd3" else 3.5
    guided = args.family == "sd3"
    size = dict(height=args.size, width=args.size)

    def run_plain():
        pipe(PROMPTS, num_inference_steps=args.steps, guidance_scale=guidance, output_type="latent",
             generator=torch.Generator().manual_seed(0), **size)

    def run_ours():
        edit(pipe, PROMPTS[0], PROMPTS[1:], method=method(args.method), seed=0, steps=args.steps, guidance=guidance,
             progress=False, decode=False, **size)

    def run_materialising():
        with installed_processors(pipe.transformer, materialising(pipe, guided)):
            run_plain()

    fn = {"plain": run_plain, "fpe_mat": run_materialising}.get(args.method, run_ours)
    times = []
    for rep in range(args.reps + 1):
        start = time.perf_counter()
        with torch.no_grad():
            fn()
        if rep:  # the first run is a warm-up
            times.append(time.perf_counter() - start)
    return {"method": args.method, "times_s": times, "median_s": statistics.median(times)}


def run_worker(args, name: str) -> float:
    cmd = [sys.executable, __file__, "--method", name, "--family", args.family, "--size", str(args.size), "--depth",
           str(args.depth), "--single", str(args.single), "--steps", str(args.steps), "--reps", str(args.reps),
           "--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["median_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=("sd3", "flux"), default="sd3")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--depth", type=int, default=2, help="joint (FLUX: double-stream) blocks")
    parser.add_argument("--single", type=int, default=2, help="FLUX's single-stream blocks")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "transformers.json")
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        print(json.dumps(worker(args)))
        return
    methods = ["plain"] + [m for m in args.methods if m != "plain"]
    rounds = []
    for r in range(args.rounds):
        times = {name: run_worker(args, name) for name in methods}
        rounds.append(times)
        print(f"round {r + 1}: " + ", ".join(f"{m} {t:.2f} s" for m, t in times.items()), flush=True)
    ratios = {m: [t[m] / t["plain"] for t in rounds] for m in methods[1:]}
    report = {"family": args.family, "size": args.size, "depth": args.depth,
              "single": args.single if args.family == "flux" else None, "steps": args.steps,
              "reps_per_process": args.reps, "threads": args.threads, "device_name": device_description("cpu"),
              "prompts": PROMPTS, "rounds": rounds,
              "ratio": {m: {"median": statistics.median(v), "min": min(v), "max": max(v), "per_round": v}
                        for m, v in ratios.items()}}
    for m, v in ratios.items():
        print(f"{m}/plain: median {statistics.median(v):.3f} (rounds {min(v):.3f}-{max(v):.3f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
