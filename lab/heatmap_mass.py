"""Do the cross-attention heat maps show where a word acts? (issue #36, item 5)

On the shapes fixture, generate "a <colour> <shape>" from held-out seeds, record every cross-attention layer's map
of the object word and of the colour word with ``record_attention`` (the recorder the web UI uses, conditional
rows, every step averaged), and measure, per layer group (token grid) and for the UI's combined map (every layer
brought to the largest grid by bilinear interpolation and averaged), the share of the map's mass inside the oracle's
object mask, against the mask's share of the image: a map that ignores the object puts about the mask's share
there (lift 1), a map on the object puts more (lift > 1).

    python -m lab.heatmap_mass --images 50 --seed 5000 --out lab/results/heatmap_mass

Writes ``summary.json`` (per word and layer group: mean mass inside, mean mask share, mean lift, and the share of
images whose mass inside exceeds the mask's share) and prints a Markdown table. Beside the two words it measures
the end-of-text token (which a causal text encoder writes after reading the whole caption), the UI's map as it is
shown (min-max normalised: the mass above the map's minimum), and each token's share of the attention (against
1/77, a uniform share).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from freeprompt.attention import discover_layers, record_attention, word_token_indices
from freeprompt.editing.generated import edit
from freeprompt.models.loading import load_pipeline
from freeprompt.shapes import COLORS, SHAPES, caption, oracle


def mass_inside(heat: torch.Tensor, mask: np.ndarray) -> tuple[float, float]:
    """(share of the map's mass inside the mask, the mask's share of the image), the mask averaged down to the map's
    grid (area)."""
    grid = F.adaptive_avg_pool2d(torch.tensor(mask, dtype=torch.float32)[None, None], heat.shape[-2:])[0, 0]
    heat = heat.clamp_min(0).float()
    return float((heat * grid).sum() / heat.sum().clamp_min(1e-12)), float(grid.mean())


def one_image(pipe, seed: int, color: str, shape: str, steps: int, guidance: float) -> dict:
    """Per word and layer group: (mass inside, mask share) for one generated image."""
    prompt = caption("simple", color, shape)
    with record_attention(pipe, kind="cross", layers="all", tokens=None) as rec:
        result = edit(pipe, prompt, [prompt], seed=seed, steps=steps, guidance=guidance, self_replace="0:0",
                      progress=False)
    image = np.asarray(result.images[0].convert("RGB"))
    mask = oracle.color_mask(image, color)
    if mask.sum() < 0.01 * mask.size:  # the object did not come out in its colour: fall back to any object
        mask = oracle.object_mask(image)
    maps, registry = rec.maps(), discover_layers(pipe.unet)
    side = max(m.shape[-1] for m in maps.values())
    end = len(pipe.tokenizer(prompt)["input_ids"]) - 1  # the end-of-text token, after the words
    out = {}
    for label, positions in (("object word", word_token_indices(pipe.tokenizer, prompt, shape)),
                             ("colour word", word_token_indices(pipe.tokenizer, prompt, color)),
                             ("end-of-text token", [end])):
        per_layer = {name: m[0, positions].mean(0) for name, m in maps.items()}
        groups: dict[str, list] = {}
        for heat in per_layer.values():
            groups.setdefault(f"{heat.shape[-2]}x{heat.shape[-1]}", []).append(heat)
        for group, heats in groups.items():
            out[(label, group)] = mass_inside(torch.stack(heats).mean(0), mask)
        ui = torch.stack([F.interpolate(h[None, None], size=(side, side), mode="bilinear")[0, 0]
                          for h in per_layer.values()]).mean(0)
        out[(label, "UI map (all layers)")] = mass_inside(ui, mask)
        out[(label, "UI map as shown (min-max)")] = mass_inside(ui - ui.min(), mask)
        out[(label, "share of attention")] = (float(sum(m[0, positions].sum(0).mean() for m in maps.values())
                                                    / len(maps)), 1.0 / maps_tokens(maps))
    out["mask_area"] = float(mask.mean())
    assert len(registry.of_kind("cross")) == len(maps)
    return out


def maps_tokens(maps: dict) -> int:
    return next(iter(maps.values())).shape[1]


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    for key in [k for k in rows[0] if isinstance(k, tuple)]:
        inside = np.array([r[key][0] for r in rows])
        share = np.array([r[key][1] for r in rows])
        table.append({"word": key[0], "layers": key[1], "n": len(rows), "mass_inside": float(inside.mean()),
                      "mask_share": float(share.mean()), "lift": float((inside / np.maximum(share, 1e-9)).mean()),
                      "above_chance": float((inside > share).mean())})
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--seed", type=int, default=5000, help="first seed (held out: the fixture trained on others)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path("lab/results/heatmap_mass"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = load_pipeline("shapes", device="cpu").pipe
    rng = np.random.default_rng(args.seed)
    rows = []
    for i in range(args.images):
        color, shape = list(COLORS)[rng.integers(len(COLORS))], list(SHAPES)[rng.integers(len(SHAPES))]
        rows.append(one_image(pipe, args.seed + i, color, shape, args.steps, args.guidance))
    table = summarise(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "table": table}, indent=1) + "\n")
    print("| word | layers | n | mass inside the object | object's share of the image | lift | images above chance |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['word']} | {r['layers']} | {r['n']} | {r['mass_inside']:.1%} | {r['mask_share']:.1%} | "
              f"{r['lift']:.2f} | {r['above_chance']:.0%} |")


if __name__ == "__main__":
    main()
