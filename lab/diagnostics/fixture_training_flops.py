"""How much arithmetic one training sample of the shapes fixture costs, and what share of an accelerator's peak a
measured step time used. Counts the text encoder and UNet forward + backward with torch's FlopCounterMode (matmuls,
convolutions, attention), on the CPU, for the fixture configs.

    python -m lab.diagnostics.fixture_training_flops --out lab/results/fixture_training_flops.json \\
        --measured l32:1024:345 --peak-tflops 989

``--measured NAME:BATCH:MS`` is a step time seen elsewhere (e.g. in a GPU training log) for config NAME.
"""

import argparse
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from freeprompt.io.outputs import write_text_atomic
from lab.fixture.training import TrainConfig, build_models

CONFIGS = {"l16": TrainConfig(), "l32": TrainConfig(vae_channels=(32, 64))}


def gflop_per_sample(cfg: TrainConfig, batch: int = 2) -> float:
    _, text_encoder, unet = build_models(cfg)
    side = cfg.image_size // 2 ** (len(cfg.vae_channels) - 1)
    latents = torch.randn(batch, 4, side, side)
    tokens = torch.randint(0, 49406, (batch, 77))
    with FlopCounterMode(display=False) as counter:
        context = text_encoder(tokens)[0]
        unet(latents, torch.tensor([10, 500][:batch]), encoder_hidden_states=context).sample.pow(2).mean().backward()
    return counter.get_total_flops() / batch / 1e9


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--measured", action="append", default=[], help="NAME:BATCH:MS_PER_STEP")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {"gflop_per_sample_fwd_bwd": {name: round(gflop_per_sample(cfg), 3) for name, cfg in CONFIGS.items()},
              "measured": []}
    for item in args.measured:
        name, batch, ms = item.split(":")
        gflop = result["gflop_per_sample_fwd_bwd"][name]
        samples_per_s = int(batch) / (float(ms) / 1000)
        tflops = gflop * samples_per_s / 1000
        result["measured"].append({"config": name, "batch": int(batch), "ms_per_step": float(ms),
                                   "samples_per_s": round(samples_per_s), "achieved_tflops": round(tflops, 1),
                                   "share_of_peak": round(tflops / args.peak_tflops, 4),
                                   "peak_tflops": args.peak_tflops})
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, text + "\n")
