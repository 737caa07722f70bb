"""Does a self-attention probe read the class, or the layout the class produced? (issue #39, docs/probe_shapes_mmdit)

Takes a probe dataset that `freeprompt probe run` collected (e.g. ``OUT/data/self_color``), regenerates every item
as the collection did (the same seed's noise, prompt, sampler, steps and guidance), and finds the object in the
decoded image with the oracle's colour-blind foreground mask (``shapes.oracle.object_mask``). The *layout* features
are that mask alone: pooled to the attention maps' grid (8x8 on the MM-DiT fixture), and at full resolution. The
same probes as the report (the authors' classifier, the linear one, the shuffled-label control) are trained on the
same split rule (20 % of each class held out, seed 0). If the footprint alone names the colour about as well as the
self maps do, the maps' colour reading is the layout's: under a shared seed the object's place and size depend on
the prompt. A diagnostic of the fixtures, not a method freeprompt ships.

    python -m lab.diagnostics.self_map_layout --data probe-shapes-mmdit/data/self_color --model shapes-mmdit \
        --out lab/results/self_map_layout_mmdit.json
    python -m lab.diagnostics.self_map_layout --data probe-shapes-mmdit/data/self_color --model shapes --guidance 3 \
        --out lab/results/self_map_layout_unet.json   # the same items on the U-Net fixture (its probe's guidance)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from freeprompt.analysis.collect import CollectOptions, generate_items
from freeprompt.analysis.datasets import open_dataset
from freeprompt.analysis.probes import ProbeConfig, fit_and_score, stratified_split
from freeprompt.diffusion import decode, latent_shape
from freeprompt.io.outputs import write_json
from freeprompt.models.loading import load_pipeline
from freeprompt.shapes import oracle


def footprints(pipe, items: list[dict], options: CollectOptions, latent_hw, batch: int) -> np.ndarray:
    """Every item's colour-blind object mask (N, H, W), its image generated as the collection generated it."""
    shape = latent_shape(pipe, options.height, options.width)
    if list(shape[-2:]) != list(latent_hw):
        raise SystemExit(f"latents {shape[-2:]} differ from the dataset's {latent_hw}")
    masks = []
    for b0 in range(0, len(items), batch):
        latents = generate_items(pipe, items[b0:b0 + batch], shape, options)
        masks += [oracle.object_mask(np.asarray(img.convert("RGB"))) for img in decode(pipe, latents)]
    return np.stack(masks)


def pooled(masks: np.ndarray, grid: int) -> np.ndarray:
    n, h, w = masks.shape
    return masks.reshape(n, grid, h // grid, grid, w // grid).mean(axis=(2, 4))


def probe_all(features: dict[str, np.ndarray], y: torch.Tensor, classes: list[str], config: ProbeConfig) -> dict:
    train, test = stratified_split(y, config.test_fraction, config.seed)
    out = {}
    for name, x in features.items():
        x = torch.from_numpy(x.reshape(len(x), -1).astype(np.float32))
        for probe, shuffled in (("authors", False), ("linear", False), ("authors", True)):
            r = fit_and_score(x[train], y[train], x[test], y[test], classes, probe, config, shuffle_labels=shuffled)
            out[f"{name}/{probe}{'_shuffled' if shuffled else ''}"] = {
                k: r[k] for k in ("accuracy", "train_accuracy", "per_class", "n_train", "n_test", "features")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a probe dataset folder (meta.json, index.jsonl)")
    ap.add_argument("--model", default="shapes-mmdit", help="the dataset's model, or another to ask the same items of")
    ap.add_argument("--steps", type=int, help="default: the dataset's")
    ap.add_argument("--guidance", type=float, help="default: the dataset's (give the other model's own)")
    ap.add_argument("--grid", type=int, default=8, help="the attention maps' grid to pool the mask to")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=15, help="the probe config's (docs/probe_shapes_mmdit.json)")
    ap.add_argument("--hidden-cap", type=int, default=1024)
    ap.add_argument("--out", type=Path, required=True, help="JSON file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = open_dataset(args.data, quiet=True)
    override = {k: v for k, v in (("steps", args.steps), ("guidance", args.guidance)) if v is not None}
    options = replace(CollectOptions(**ds.meta["collect"]), **override)
    items, classes = ds.items, ds.classes
    started = time.time()
    masks = footprints(load_pipeline(args.model, device="cpu").pipe, items, options, ds.meta["latent_hw"], args.batch)
    y = ds.y
    config = ProbeConfig(epochs=args.epochs, hidden_cap=args.hidden_cap)
    features = {f"mask {args.grid}x{args.grid}": pooled(masks.astype(np.float32), args.grid),
                f"mask {masks.shape[1]}x{masks.shape[2]}": masks.astype(np.float32)}
    result = {"data": str(args.data), "model": args.model, "dataset": ds.name, "items": len(items),
              "steps": options.steps, "guidance": options.guidance,
              "classes": classes, "chance": round(1 / len(classes), 3), "seconds": round(time.time() - started),
              "object_found": round(float((masks.sum(axis=(1, 2)) > 0).mean()), 3),
              "probes": probe_all(features, y, classes, config)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result, indent=1)
    print(json.dumps({k: round(v["accuracy"], 3) for k, v in result["probes"].items()}, indent=1))


if __name__ == "__main__":
    main()
