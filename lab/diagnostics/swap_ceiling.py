"""What does a *perfect* swap score on the shapes benchmark? For each colour swap of `freeprompt bench shapes`
(same colours, shapes and template), renders a scene with the source colour and the same scene, same geometry,
recoloured to the target colour; scores the pair with the bench's own `score_edit` (colour-specific oracle masks)
as rendered and after a round trip of both images through the model's VAE (encode, posterior mean, decode).
``--kind shape`` does the same for the bench's object swaps: the same object (centre, size, rotation, colour) drawn
as the target shape, scored by the four object-swap scores (shape reached, place, size, colour kept): how often an
ideal object swap passes them (issue #37, docs/object-swaps.md).

The rendered pair measures the oracle; the round-trip pair measures what the latent space of this VAE lets any
editor reach at best. If the round trip already keeps a shape's IoU under the bar's 0.8, the edit method cannot be
blamed for that shape's misses. A diagnostic of the shapes fixture's development (docs/fixture-history.md), not a
method freeprompt ships.

    python -m lab.diagnostics.swap_ceiling --model shapes --n 400 --out lab/results/swap_ceiling.json
    python -m lab.diagnostics.swap_ceiling --model shapes --kind shape --n 400 --out lab/results/shape_swap_ceiling.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from freeprompt.diffusion import decode
from freeprompt.editing.images import image_to_latents
from freeprompt.evaluation.shapes_bench import JOINT_IOU, edit_items, score_edit
from freeprompt.io.outputs import write_json
from freeprompt.models.loading import load_pipeline
from freeprompt.shapes import world

OBJECT_SCORES = ("attribute_ok", "place_ok", "size_ok", "other_kept", "all_four")


def edited(spec: world.SceneSpec, **change) -> world.SceneSpec:
    """The same scene with the captioned object changed (``color=`` or ``shape=``), all else (centre, size,
    rotation) kept, and the caption to match."""
    first = replace(spec.objects[0], **change)
    return replace(spec, objects=(first,) + spec.objects[1:],
                   caption=world.caption(spec.template, first.color, first.shape))


def round_trip(pipe, images: list[np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        latents = torch.cat([image_to_latents(pipe, Image.fromarray(img)) for img in images])
        return [np.asarray(img.convert("RGB")) for img in decode(pipe, latents)]


def summarise(rows: list[dict], key: str) -> dict:
    def rate(sel, score):
        return round(float(np.mean([r[key][score] for r in sel])), 3)

    def stats(sel):
        ious = np.array([r[key]["iou"] for r in sel])
        return {"n": len(sel), "joint": rate(sel, "joint"), **{score: rate(sel, score) for score in OBJECT_SCORES},
                "iou_median": round(float(np.median(ious)), 3), "iou_min": round(float(ious.min()), 3),
                f"share_iou_below_{JOINT_IOU}": round(float(np.mean(ious < JOINT_IOU)), 3)}

    out = {"all": stats(rows)}
    for shape in world.SHAPES:
        sel = [r for r in rows if r["shape"] == shape]
        if sel:
            out[shape] = stats(sel)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--kind", choices=("color", "shape"), default="color", help="colour swaps or object swaps")
    ap.add_argument("--n", type=int, default=80, help="swaps, drawn as the benchmark draws its lists (item seed 0)")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels (the fixture's resolution)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    pipe = load_pipeline(args.model, device="cpu").pipe
    rows, started = [], time.time()
    counts = (args.n, 0) if args.kind == "color" else (0, args.n)
    for item in edit_items(*counts):
        spec = world.sample_spec(np.random.default_rng(item.seed), template=item.template, color=item.src_color,
                                 shape=item.src_shape)
        src = world.render(spec, args.size).image
        change = {"color": item.tgt_color} if args.kind == "color" else {"shape": item.tgt_shape}
        tgt = world.render(edited(spec, **change), args.size).image
        src_vae, tgt_vae = round_trip(pipe, [src, tgt])
        rows.append({"id": item.id, "shape": item.src_shape, "src_color": item.src_color,
                     "tgt_color": item.tgt_color, "tgt_shape": item.tgt_shape, "rendered": score_edit(src, tgt, item),
                     "vae_round_trip": score_edit(src_vae, tgt_vae, item)})
    result = {"model": args.model, "kind": args.kind, "items": args.n, "size": args.size,
              "seconds": round(time.time() - started),
              "joint_iou": JOINT_IOU, "rendered": summarise(rows, "rendered"),
              "vae_round_trip": summarise(rows, "vae_round_trip"), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result, indent=1)
    print(json.dumps({k: result[k]["all"] for k in ("rendered", "vae_round_trip")}, indent=2))
    print("by shape (VAE round trip):", json.dumps({k: v for k, v in result["vae_round_trip"].items() if k != "all"}))


if __name__ == "__main__":
    main()
