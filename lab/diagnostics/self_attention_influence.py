"""How much say self-attention has in a model's layout: generate "a <color> <shape>" normally and again with the
self-attention maps of the chosen layers replaced by uniform maps (every token attends equally to all tokens),
same seed, and measure how far the image and the object move.

FPE can only keep a layout that self-attention carries; a model whose layout survives uniform maps gives FPE
nothing to transfer. A diagnostic of the shapes fixture's development (docs/fixture-history.md).

    python -m lab.diagnostics.self_attention_influence --model shapes --n 40 [--layers all] [--steps 25] \\
        [--out lab/results/self_attention_influence.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from freeprompt.attention.kernels import attention_input, attention_output, split_heads
from freeprompt.attention.layers import discover_layers
from freeprompt.attention.processors import installed_processors
from freeprompt.editing.generated import edit
from freeprompt.models.loading import load_pipeline
from freeprompt.shapes import oracle, world


class UniformSelfAttention:
    """Self-attention with a uniform map: each token's output is the mean of all values."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *a, **k):
        tokens, residual, spatial_shape = attention_input(attn, hidden_states, temb)
        value = split_heads(attn.to_v(tokens), attn.heads)
        out = value.mean(dim=2, keepdim=True).expand_as(value)
        return attention_output(attn, out, residual, spatial_shape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--layers", default="all", help="self-attention layers given uniform maps")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--out", default=None, help="write the summary JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    loaded = load_pipeline(args.model, device="cpu")
    pipe = loaded.pipe
    guidance = args.guidance if args.guidance is not None else loaded.defaults.get("guidance", 7.5)
    size = loaded.defaults.get("height") or 64
    layers = discover_layers(pipe.unet).select(args.layers, "self", (size // 4, size // 4))
    rng = np.random.default_rng(0)
    diffs, ious, kept_color = [], [], 0
    started = time.time()
    for i in range(args.n):
        color, shape = list(world.COLORS)[i % 10], world.SHAPES[(i // 10) % len(world.SHAPES)]
        prompt = world.caption("simple", color, shape)
        seed = int(rng.integers(2**31 - 1))
        kw = dict(seed=seed, steps=args.steps, guidance=guidance, self_replace="0:0", progress=False)
        normal = np.asarray(edit(pipe, prompt, [prompt], **kw).images[0].convert("RGB"))
        with installed_processors(pipe.unet, {layer.name + ".processor": UniformSelfAttention() for layer in layers}):
            uniform = np.asarray(edit(pipe, prompt, [prompt], **kw).images[0].convert("RGB"))
        diffs.append(float(np.abs(normal.astype(float) - uniform.astype(float)).mean()))
        a, b = oracle.color_mask(normal, color), oracle.color_mask(uniform, color)
        ious.append(oracle.mask_iou(a, b))
        kept_color += bool(b.sum() >= 0.01 * b.size)
    summary = {
        "model": args.model, "samples": args.n, "layers": [layer.index for layer in layers], "steps": args.steps,
        "guidance": guidance, "mean_abs_pixel_difference": float(np.mean(diffs)),
        "median_abs_pixel_difference": float(np.median(diffs)), "object_mask_iou_median": float(np.median(ious)),
        "object_mask_iou_mean": float(np.mean(ious)), "prompted_colour_still_present": kept_color / args.n,
        "seconds": round(time.time() - started, 1), "torch": torch.__version__,
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
