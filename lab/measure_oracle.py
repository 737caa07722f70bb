"""Oracle accuracy on held-out shapes-world renders, clean and degraded, plus render speed.

    python -m lab.measure_oracle [--n 1000] [--size 64]

Columns (per condition, n images from the default template mixture):
  colour / shape   colour-free read: each ground-truth object is matched to the object_mask
                   component overlapping it most, then dominant_color / classify_shape on it
  shape|col        read(image, color) for the captioned object (the editing metric's path)
  objIoU           median IoU of object_mask vs the union of ground-truth masks
  colIoU           median IoU of color_mask(captioned colour) vs the captioned object's mask
Seeds are below oracle.FIT_SEED_MIN, hence disjoint from the classifier's fitting seeds.
"""

import argparse
import time

import numpy as np
import torch

from freeprompt.shapes import oracle, world
from lab.fixture.classifier import degrade

torch.set_num_threads(1)

CONDITIONS = {
    "clean": {},
    "blur1": {"blur": 1.0},
    "noise8": {"noise": 8.0},
    "jitter15": {"jitter": 15.0},
    "quant8": {"levels": 8},
    "blur1+noise8": {"blur": 1.0, "noise": 8.0},
    "blur1+noise8+jit15": {"blur": 1.0, "noise": 8.0, "jitter": 15.0},
    # harsher than asked for, to show where the oracle starts to fail
    "blur2+noise16+jit20": {"blur": 2.0, "noise": 16.0, "jitter": 20.0},
    "noise32": {"noise": 32.0},
}


def evaluate(samples, degrade_kw, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    col_ok = shp_ok = n_obj = shp_col_ok = 0
    obj_iou, col_iou = [], []
    for s in samples:
        img = degrade(s.image, rng, **degrade_kw) if degrade_kw else s.image
        om = oracle.object_mask(img)
        lab, _ = oracle.components(om)
        for gt in s.objects:
            n_obj += 1
            hit = lab[gt.mask & om]
            if len(hit) == 0:
                continue
            comp = lab == np.bincount(hit).argmax()
            col_ok += oracle.dominant_color(img, comp) == gt.color
            shp_ok += oracle.classify_shape(comp) == gt.shape
        first = s.objects[0]
        r = oracle.read(img, first.color)
        shp_col_ok += r.shape == first.shape
        col_iou.append(oracle.mask_iou(r.mask, first.mask))
        obj_iou.append(oracle.mask_iou(om, np.any([o.mask for o in s.objects], 0)))
    return {"colour": col_ok / n_obj, "shape": shp_ok / n_obj, "shape|col": shp_col_ok / len(samples),
            "objIoU": float(np.median(obj_iou)), "colIoU": float(np.median(col_iou))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--first-seed", type=int, default=1_000_000)
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    args = ap.parse_args()
    assert args.first_seed + args.n <= oracle.FIT_SEED_MIN

    t = time.perf_counter()
    samples = [world.random_sample(args.first_seed + i, args.size) for i in range(args.n)]
    dt = time.perf_counter() - t
    print(f"render: {args.n / dt:.0f} samples/s at {args.size}x{args.size} (1 thread)")
    counts = {k: 0 for k in world.TEMPLATES}
    for s in samples:
        counts[s.spec.template] += 1
    print("templates:", ", ".join(f"{k} {v}" for k, v in counts.items()))

    cols = ["colour", "shape", "shape|col", "objIoU", "colIoU"]
    print(f"{'condition':<20}" + "".join(f"{c:>10}" for c in cols))
    for i, name in enumerate(args.conditions.split(",")):
        t = time.perf_counter()
        res = evaluate(samples, CONDITIONS[name], seed=i)
        print(f"{name:<20}" + "".join(f"{res[c]:>10.3f}" for c in cols)
              + f"   ({time.perf_counter() - t:.1f}s)")


if __name__ == "__main__":
    main()
