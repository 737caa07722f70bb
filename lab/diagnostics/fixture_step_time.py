"""Seconds per training step of the shapes fixture's text encoder + UNet (forward, backward, AdamW) and of its VAE,
on this machine, for each UNet memory format of `TrainConfig.unet_memory_format`, in float32 and under bf16 autocast
(`TrainConfig.mixed_precision`; CPUs with AMX or AVX512-BF16 run it in hardware). Medians of repeats, all in one
run, so the ratios compare like with like. Synthetic batches: the arithmetic is that of a real step.

    OMP_NUM_THREADS=2 python -m lab.diagnostics.fixture_step_time --threads 2 \\
        --out lab/results/fixture_step_time_<machine>.json
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from freeprompt.io.outputs import write_text_atomic
from freeprompt.io.runinfo import cpu_model
from lab.fixture.training import (
    MEMORY_FORMATS,
    TrainConfig,
    adamw,
    build_models,
    latent_factor,
    mixed_precision_autocast,
    stage_plan,
)


def _median_seconds(step, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def unet_step_seconds(cfg: TrainConfig, memory_format: str, precision: str, warmup: int, repeats: int) -> float:
    _, text_encoder, unet = build_models(cfg)
    fmt = MEMORY_FORMATS[memory_format]
    unet.to(memory_format=fmt)
    opt = adamw(list(unet.parameters()) + list(text_encoder.parameters()), 1e-4)  # the training's own (fused)
    side, batch = cfg.image_size // latent_factor(cfg), cfg.unet_batch

    def step():
        x = torch.randn(batch, 4, side, side).contiguous(memory_format=fmt)
        with mixed_precision_autocast("cpu", precision):
            context = text_encoder(torch.randint(0, 49406, (batch, 77)))[0]
            pred = unet(x, torch.randint(0, 1000, (batch,)), encoder_hidden_states=context).sample
        opt.zero_grad(set_to_none=True)
        F.mse_loss(pred.float(), x).backward()
        opt.step()

    return _median_seconds(step, warmup, repeats)


def vae_step_seconds(cfg: TrainConfig, precision: str, warmup: int, repeats: int) -> float:
    vae, _, _ = build_models(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-4)

    def step():
        x = torch.rand(cfg.vae_batch, 3, cfg.image_size, cfg.image_size) * 2 - 1
        with mixed_precision_autocast("cpu", precision):
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.mean + posterior.std * torch.randn_like(posterior.mean)).sample.float()
        opt.zero_grad(set_to_none=True)
        (F.l1_loss(recon, x) + F.mse_loss(recon, x)).backward()
        opt.step()

    return _median_seconds(step, warmup, repeats)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--precisions", nargs="+", default=["no", "bf16"], choices=["no", "bf16"],
                        help="TrainConfig.mixed_precision values to time (no = float32)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig()
    unet_steps = stage_plan(cfg).total
    variants = [(fmt, precision) for precision in args.precisions for fmt in MEMORY_FORMATS]
    unet = {f"{fmt}_{precision}": round(unet_step_seconds(cfg, fmt, precision, args.warmup, args.repeats), 3)
            for fmt, precision in variants}
    vae = {precision: round(vae_step_seconds(cfg, precision, args.warmup, args.repeats), 3)
           for precision in args.precisions}
    result = {
        "cpu": cpu_model(), "threads": args.threads, "torch": torch.__version__, "repeats": args.repeats,
        "unet_batch": cfg.unet_batch, "vae_batch": cfg.vae_batch, "unet_steps": unet_steps, "vae_steps": cfg.vae_steps,
        "unet_step_s": unet, "vae_step_s": vae,
        "over_contiguous_float32": {name: round(s / unet["contiguous_no"], 3) for name, s in unet.items()},
        "fastest_unet_variant": min(unet, key=unet.get),
        # the recipe's stages at these speeds (rendering, latent encoding and saving add ~1-3 min)
        "recipe_minutes": {**{f"vae_{precision}": round(s * cfg.vae_steps / 60, 1) for precision, s in vae.items()},
                           **{f"unet_{name}": round(s * unet_steps / 60, 1) for name, s in unet.items()}},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, text + "\n")
