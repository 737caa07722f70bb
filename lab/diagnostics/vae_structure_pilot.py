"""Pilot for the fixture VAE's structure channel: train only the VAE with one setting and report what decides
whether FPE can work on colour swaps — held-out reconstruction PSNR and how alike the colours' latent
signatures are (cosine of "mean latent on the object minus the background", the quantity that
lab/diagnostics/colour_noise_placement.py relates to where a colour swap moves the object).

A VAE whose colour signatures point in different directions lets the initial noise favour a different place per
colour, so a colour swap moves the object whatever the attention does; a shared object component (the structure
channel) makes the signatures alike. Too strong or too early and the colour is not encoded at all (PSNR drops,
every cosine ~1). A diagnostic of the shapes fixture's development (docs/fixture-history.md).

    python -m lab.diagnostics.vae_structure_pilot --weight 0.1 --scale 4 --start 0.3 --out lab/results/vae_pilot \\
        [--data-file F.npz]

700 steps (the fixture's recipe) took ~15 min on 2 threads of the 2-core development CPU, ~45 min on 1 thread
beside another run. The --out folder gets vae.pt (to reuse in a `python -m lab.train_fixture` work
folder) and pilot.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from lab.diagnostics.colour_noise_placement import colour_signatures
from lab.fixture.training import (
    TrainConfig,
    build_models,
    encode_latents,
    held_out_psnr,
    latent_factor,
    load_or_render,
    train_vae,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weight", type=float, default=TrainConfig.vae_structure_weight)
    ap.add_argument("--scale", type=float, default=TrainConfig.vae_structure_scale)
    ap.add_argument("--start", type=float, default=TrainConfig.vae_structure_start)
    ap.add_argument("--steps", type=int, default=TrainConfig.vae_steps)
    ap.add_argument("--crop", type=int, default=TrainConfig.vae_crop, help="train on crops of this side (0: whole)")
    ap.add_argument("--crop-until", type=float, default=TrainConfig.vae_crop_until,
                    help="fraction of the steps on crops before whole images")
    ap.add_argument("--images", type=int, default=TrainConfig.num_images, help="training renders")
    ap.add_argument("--data-file", type=Path, help="cache of the rendered training set (.npz)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = TrainConfig(vae_structure_weight=args.weight, vae_structure_scale=args.scale,
                      vae_structure_start=args.start, vae_steps=args.steps, num_images=args.images,
                      vae_crop=args.crop, vae_crop_until=args.crop_until,
                      threads=args.threads)
    vae, _, _ = build_models(cfg)
    start = time.time()
    images, _ = load_or_render(cfg, args.data_file)
    train_vae(vae, images, cfg, lambda *a: print(*a, flush=True))
    minutes = (time.time() - start) / 60
    vae.eval()
    with torch.no_grad():
        psnr = held_out_psnr(vae, cfg)
        scaling = float(1 / encode_latents(vae, images[:4000]).std())
        vae.register_to_config(scaling_factor=scaling)
        signatures = colour_signatures(SimpleNamespace(vae=vae, vae_scale_factor=latent_factor(cfg)), per_colour=30)
    names = list(signatures)
    cosines = {f"{a}/{b}": float(F.cosine_similarity(signatures[a], signatures[b], dim=0))
               for i, a in enumerate(names) for b in names[i + 1:]}
    values = list(cosines.values())
    report = {"weight": args.weight, "scale": args.scale, "start": args.start, "steps": args.steps,
              "crop": args.crop, "crop_until": args.crop_until,
              "minutes": round(minutes, 1), "threads": args.threads, "torch": torch.__version__,
              "held_out_psnr_db": round(psnr, 2), "latent_scaling_factor": scaling,
              "cosine_min": min(values), "cosine_median": float(np.median(values)),
              "pairs_above_0.5": sum(v > 0.5 for v in values), "pairs": len(values),
              "signature_cosines": {k: round(v, 3) for k, v in cosines.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(vae.state_dict(), args.out / "vae.pt")
    tmp = args.out / "pilot.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, args.out / "pilot.json")
    print(json.dumps({k: v for k, v in report.items() if k != "signature_cosines"}, indent=1))


if __name__ == "__main__":
    main()
