"""Time and reconstruction quality of the four inversions (direct, ddim, null-text, negative-prompt).

For each model, image and inversion: the time to invert (VAE encode + inversion, median of --reps after a
one-step warm-up), the time of one edit (the identity edit: target == source, so the target row shows what
the edit does to an unchanged prompt), and PSNR against the input image of
  recon_psnr     the edit's source image (the method's reconstruction: what the user sees as "source"),
  identity_psnr  the identity edit's target image (direct/ddim do not correct targets, so they drift),
  ddim_psnr      plain guided DDIM from the inverted noise without pinning (the inversion's own error),
  vae_psnr       decode(encode(image)): the ceiling of every reconstruction.
Target: direct and negative-prompt at least 10x faster than null-text with reconstruction at least as good.

Models: the trained fixture model (``--fixture``, on by default when installed; shapes images and their
captions) and a randomly initialised pipeline (``--arch tiny|sd15|none``; the shared car photo, else a shapes
image). Random weights make the PSNRs meaningless (their VAE decodes everything to noise) but the timings
real; use them for speed, the fixture model for quality.

    python benchmarks/bench_inversion.py --arch tiny --steps 5 --size 64                # quick check, seconds
    python benchmarks/bench_inversion.py --arch sd15 --size 256 --steps 5 --no-fixture  # SD1.5-sized timings
    python benchmarks/bench_inversion.py --arch none --steps 50 --images 4              # fixture model only
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("direct", "ddim", "null-text", "negative-prompt")
CAR = ROOT.parent / "shared" / "data" / "images" / "000141.jpg"


def models(args):
    """(name, pipe, [(image, source prompt)], info) for each model to benchmark."""
    import torch
    from PIL import Image

    from freeprompt.editing.images import load_image
    from freeprompt.models.loading import fixture_path, load_pipeline
    from freeprompt.models.random import random_pipeline
    from freeprompt.shapes import world

    def shapes_images(size):
        out = []
        for seed in range(args.images):
            sample = world.random_sample(seed, size=size, template="simple")
            out.append((Image.fromarray(sample.image), sample.spec.caption))
        return out

    if args.fixture and (fixture_path("shapes") / "model_index.json").exists():
        loaded = load_pipeline("shapes", device=args.device, dtype=args.dtype)
        yield "shapes", loaded.pipe, shapes_images(64), {"model": "shapes", "revision": loaded.info.get("revision")}
    elif args.fixture:
        print(f"(no fixture model at {fixture_path('shapes')}: skipped)", file=sys.stderr)
    if args.arch != "none":
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
        pipe = random_pipeline(args.arch, seed=0).to(args.device, dtype)
        size = args.size or (64 if args.arch == "tiny" else 256)
        if CAR.exists():
            pairs = [(load_image(CAR, (size, size), "crop"), "a photo of a car")]
        else:
            pairs = shapes_images(size)[:1]
            pairs = [(p[0].resize((size, size), Image.Resampling.BICUBIC), p[1]) for p in pairs]
        yield f"random-{args.arch}", pipe, pairs, {"model": f"random_pipeline({args.arch!r})", "size": size}


def bench_one(pipe, image, source, method, args) -> dict:
    import torch

    from freeprompt.editing.images import psnr
    from freeprompt.editing.inversion import invert, measure_reconstruction
    from freeprompt.editing.real import edit_real

    sync = torch.cuda.synchronize if pipe.unet.device.type == "cuda" else (lambda: None)
    invert(pipe, image, source, method, 1, args.guidance)  # warm-up (allocations, kernels)
    times = []
    for _ in range(args.reps):
        sync()
        start = time.perf_counter()
        inv = invert(pipe, image, source, method, args.steps, args.guidance)
        sync()
        times.append(time.perf_counter() - start)
    measure_reconstruction(pipe, inv, image)
    sync()
    start = time.perf_counter()
    result = edit_real(pipe, image, source, [source], inversion=method, steps=args.steps, guidance=args.guidance,
                       progress=False, check_ddim=False)
    sync()
    total = time.perf_counter() - start
    edit_s = sum(result.timings.get(k, 0.0) for k in ("encode_s", "denoise_s", "decode_s"))
    return {
        "method": method,
        "invert_s": statistics.median(times),
        "invert_times_s": times,
        "edit_s": edit_s,
        "edit_real_total_s": total,
        "recon_psnr": round(psnr(result.images[0], image), 3),
        "identity_psnr": round(psnr(result.images[1], image), 3),
        "ddim_psnr": round(inv.ddim_psnr, 3),
        "vae_psnr": round(inv.vae_psnr, 3),
        "recon_latent_rmse": result.params["reconstruction_latent_rmse"],
        "null_text_inner_steps": inv.info.get("inner_steps"),
    }


def summarise(rows: list[dict]) -> dict:
    """Per model: mean over images of each number, the speed-up over null-text and the target's verdict."""
    out = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        per = {}
        for method in METHODS:
            sel = [r for r in mine if r["method"] == method]
            if sel:
                per[method] = {k: statistics.mean(r[k] for r in sel)
                               for k in ("invert_s", "edit_s", "recon_psnr", "identity_psnr", "ddim_psnr", "vae_psnr")}
        if "null-text" in per:
            nt = per["null-text"]
            for m in per.values():
                m["speedup_vs_null_text"] = nt["invert_s"] / m["invert_s"] if m["invert_s"] > 0 else float("inf")
            for method in ("direct", "negative-prompt"):
                if method in per:
                    m = per[method]
                    fast = m["speedup_vs_null_text"] >= 10
                    m["meets_target"] = bool(fast and m["recon_psnr"] >= nt["recon_psnr"] - 1e-6)
        out[model] = per
    return out


def markdown(summary: dict, args) -> str:
    lines = [f"steps {args.steps}, guidance {args.guidance}, device {args.device}, dtype {args.dtype}, "
             f"threads {args.threads}; times are per image", "",
             "| model | inversion | invert (s) | x faster than null-text | edit (s) | recon PSNR | identity-edit PSNR "
             "| plain DDIM PSNR | VAE PSNR | target met |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model, per in summary.items():
        for method, m in per.items():
            target = {True: "yes", False: "NO"}.get(m.get("meets_target"), "")
            speedup = m.get("speedup_vs_null_text", float("nan"))
            lines.append(f"| {model} | {method} | {m['invert_s']:.3f} | {speedup:.1f} | {m['edit_s']:.3f} "
                         f"| {m['recon_psnr']:.2f} | {m['identity_psnr']:.2f} | {m['ddim_psnr']:.2f} "
                         f"| {m['vae_psnr']:.2f} | {target} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="tiny", choices=("tiny", "sd15", "none"),
                        help="random-weight pipeline to time (none: fixture model only)")
    parser.add_argument("--fixture", action=argparse.BooleanOptionalAction, default=True,
                        help="also benchmark the trained shapes fixture model when installed")
    parser.add_argument("--size", type=int, default=None,
                        help="image side for the random pipeline (default: tiny 64, sd15 256)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--images", type=int, default=2, help="shapes images per model")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report (default benchmarks/results/inversion_<arch>.json)")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from freeprompt.io.outputs import write_json
    from freeprompt.io.runinfo import device_description, package_versions

    torch.set_num_threads(args.threads)
    rows, infos = [], {}
    for name, pipe, pairs, info in models(args):
        infos[name] = info
        for n, (image, source) in enumerate(pairs):
            for method in args.methods:
                row = {"model": name, "image": n, "source": source, **bench_one(pipe, image, source, method, args)}
                rows.append(row)
                print(f"{name:>14} img {n} {method:16} invert {row['invert_s']:7.3f} s  edit {row['edit_s']:6.3f} s  "
                      f"recon {row['recon_psnr']:6.2f} dB  ddim {row['ddim_psnr']:6.2f} dB", flush=True)
        del pipe
    if not rows:
        sys.exit("nothing to benchmark: no fixture model and --arch none")
    summary = summarise(rows)
    table = markdown(summary, args)
    print("\n" + table)
    device_name = device_description(args.device)
    report = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "device_name": device_name, "models": infos, "versions": package_versions(), "rows": rows,
              "summary": summary, "markdown": table}
    out = args.out or ROOT / "benchmarks" / "results" / f"inversion_{args.arch}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, report)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
