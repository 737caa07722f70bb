"""Does the initial noise decide where an object of a given colour appears? For each colour, the VAE latents of
rendered objects of that colour give a signature (mean latent on the object minus mean latent on the background).
Projecting a seed's initial noise on a colour's signature and smoothing it over an object-sized window predicts a
place; the script compares it with where the model actually draws "a <color> circle" from that noise. Baselines:
the same noise projected on another colour's signature, and another seed's noise with the right signature.

If the prediction from the matching colour is much closer than both baselines, the model puts an object where
the noise already looks like its colour in latent space, so a colour swap moves the object whatever the attention
maps do (see lab/diagnostics/layout_carrier.py).

With ``--bench-items`` (the items.csv of `freeprompt bench shapes` on the same model) it also splits the colour
swaps by how alike the two colours' signatures are (cosine above or below 0.5) and reports IoU and joint rate per
method in each group.

    python -m lab.diagnostics.colour_noise_placement --model shapes --seeds 20 \\
        --bench-items BENCH_DIR/items.csv --out lab/results/colour_noise_placement.json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from freeprompt.diffusion import initial_latents, latent_shape
from freeprompt.editing.generated import edit
from freeprompt.io.outputs import write_text_atomic
from freeprompt.models.loading import load_pipeline
from freeprompt.shapes import oracle, world


@torch.no_grad()
def colour_signatures(pipe, per_colour: int = 40) -> dict[str, torch.Tensor]:
    """Per colour: mean scaled latent over the object's latent pixels minus the mean over background pixels."""
    signatures = {}
    factor = pipe.vae_scale_factor
    for k, color in enumerate(world.COLORS):
        rng = np.random.default_rng(1000 + k)
        samples = [world.render(world.sample_spec(rng, template="simple", color=color)) for _ in range(per_colour)]
        images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 127.5 - 1
        latents = pipe.vae.encode(images.to(pipe.vae.dtype)).latent_dist.mean.float() * pipe.vae.config.scaling_factor
        masks = torch.from_numpy(np.stack([s.objects[0].mask for s in samples])).float()[:, None]
        cover = F.avg_pool2d(masks, factor)  # share of each latent pixel covered by the object
        obj, bg = (cover > 0.75).float(), (cover < 0.01).float()
        mean = lambda w: (latents * w).sum(dim=(0, 2, 3)) / w.sum()  # noqa: E731, B023 - called in this iteration
        signatures[color] = mean(obj) - mean(bg)
    return signatures


def predicted_centre(noise: torch.Tensor, signature: torch.Tensor, window: int, factor: int) -> np.ndarray:
    """(x, y) in image pixels of the object-sized window where the noise projects most on the signature."""
    projection = torch.einsum("chw,c->hw", noise.float(), signature / signature.norm())[None, None]
    smooth = F.avg_pool2d(projection, window, stride=1, padding=window // 2, count_include_pad=False)[0, 0]
    y, x = np.unravel_index(int(smooth.argmax()), tuple(smooth.shape))
    return np.array([(x + 0.5) * factor, (y + 0.5) * factor])


def drawn_centre(image: np.ndarray, color: str) -> np.ndarray | None:
    mask = oracle.largest_component(oracle.color_mask(image, color))
    if mask.sum() < 4:
        return None
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5])


def split_by_signature(items_csv: Path, signatures: dict[str, torch.Tensor], threshold: float = 0.5) -> dict:
    """Colour swaps of a bench run grouped by the cosine of the source and target colours' signatures."""
    groups: dict[str, dict[str, list]] = {}
    with open(items_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row["kind"] != "color":
                continue
            a, b = row["source_prompt"].split()[1], row["target_prompt"].split()[1]
            cosine = float(F.cosine_similarity(signatures[a], signatures[b], dim=0))
            group = f"cosine > {threshold}" if cosine > threshold else f"cosine <= {threshold}"
            groups.setdefault(row["method"], {}).setdefault(group, []).append(
                (float(row["iou"]), row["joint"] == "True"))
    return {method: {group: {"n": len(v), "iou_mean": round(float(np.mean([x[0] for x in v])), 3),
                             "joint": int(sum(x[1] for x in v))} for group, v in sorted(by_group.items())}
            for method, by_group in groups.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--window", type=int, default=5, help="smoothing window in latent pixels (about an object)")
    ap.add_argument("--bench-items", type=Path, default=None, help="items.csv of a shapes bench run on this model")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    pipe = load_pipeline(args.model, device="cpu").pipe
    factor = pipe.vae_scale_factor
    signatures = colour_signatures(pipe)
    colors = list(world.COLORS)
    shape = latent_shape(pipe, None, None)
    started = time.time()
    matched, other_colour, other_noise, missing = [], [], [], 0
    for s in range(args.seeds):
        seed = 5000 + s
        noise = initial_latents(seed, shape, "cpu", torch.float32)[0]
        other = initial_latents(seed + 100_000, shape, "cpu", torch.float32)[0]
        for k, color in enumerate(colors):
            prompt = world.caption("simple", color, "circle")
            image = np.asarray(edit(pipe, prompt, [prompt], seed=seed, steps=args.steps, guidance=args.guidance,
                                    self_replace="0:0", progress=False).images[0].convert("RGB"))
            centre = drawn_centre(image, color)
            if centre is None:
                missing += 1
                continue
            wrong = colors[(k + 1 + s % (len(colors) - 1)) % len(colors)]
            dist = lambda p: float(np.linalg.norm(p - centre))  # noqa: E731, B023 - called in this iteration
            matched.append(dist(predicted_centre(noise, signatures[color], args.window, factor)))
            other_colour.append(dist(predicted_centre(noise, signatures[wrong], args.window, factor)))
            other_noise.append(dist(predicted_centre(other, signatures[color], args.window, factor)))
    distances = {"matching_colour": matched, "other_colour_same_noise": other_colour,
                 "same_colour_other_noise": other_noise}
    result = {
        "model": args.model, "seeds": args.seeds, "colours": len(colors), "steps": args.steps,
        "guidance": args.guidance, "window_latent_px": args.window, "objects_found": len(matched),
        "objects_missing": missing, "seconds": round(time.time() - started),
        "median_distance_px": {k: float(np.median(v)) for k, v in distances.items()} if matched else None,
        "within_8px": {k: float(np.mean(np.array(v) <= 8)) for k, v in distances.items()} if matched else None,
        "signature_cosines": {f"{a}/{b}": round(float(F.cosine_similarity(signatures[a], signatures[b], dim=0)), 3)
                              for i, a in enumerate(colors) for b in colors[i + 1:]},
    }
    if args.bench_items:
        result["bench_colour_swaps_by_signature_cosine"] = split_by_signature(args.bench_items, signatures)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, text + "\n")


if __name__ == "__main__":
    main()
