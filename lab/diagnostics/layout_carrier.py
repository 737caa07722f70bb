"""Which attention maps carry a model's layout through a colour swap? Runs the first N colour swaps of
`freeprompt bench shapes` four ways from the same seed and scores them with the same oracle:

- ``plain``: the target prompt, no editing;
- ``fpe``: Free-Prompt-Editing (the target uses the source's self-attention maps; default layers, steps 0:0.8);
- ``cross``: the target uses the source's cross-attention maps (softmax(Q_src K_src^T) V_tgt in every
  cross-attention layer, every step: prompt-to-prompt's word-swap replacement, which a colour swap allows
  because source and target prompts align token by token);
- ``fpe+cross``: both;
- ``plain+shared-start``, ``fpe+shared-start``: the target branch's latents are overwritten with the source's after
  each of the first ``--shared-steps`` steps, so the target starts from the source's trajectory (the layout the
  source's first predictions chose) and only then reads its own prompt. ``plain+shared-start`` is the control
  that says how much of the kept layout is the shared start alone.

On a model where ``cross`` keeps the object in place and ``fpe`` does not, the layout is decided where the colour
word is read (cross-attention and what follows it), not in self-attention, and FPE has nothing to transfer.
A diagnostic of the shapes fixture's development (docs/fixture-history.md), not a method freeprompt ships.

    python -m lab.diagnostics.layout_carrier --model shapes --n 20 --out lab/results/layout_carrier
    python -m lab.diagnostics.layout_carrier --ids color-006,color-008 --methods fpe,fpe+cross --out DIR
    python -m lab.diagnostics.layout_carrier --n 80 --methods plain+shared-start,fpe+shared-start --shared-steps 1 \\
        --out DIR
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

from freeprompt.attention.kernels import (
    attention_input,
    attention_output,
    queries_keys,
    split_heads,
)
from freeprompt.attention.layers import discover_layers
from freeprompt.attention.processors import installed_processors
from freeprompt.diffusion import StepHooks
from freeprompt.editing.generated import edit
from freeprompt.editing.methods import FPE
from freeprompt.evaluation.shapes_bench import edit_items, score_edit
from freeprompt.io.outputs import write_json
from freeprompt.models.loading import load_pipeline

DEFAULT_SELF_REPLACE = str(FPE().self_replace)  # FPE's declared default
METHODS = ("plain", "fpe", "cross", "fpe+cross", "plain+shared-start", "fpe+shared-start")


class SourceCrossAttentionMaps:
    """Cross-attention in which each batch row attends with the queries and keys of row ``rows[b]`` and its own
    values (the values are its own prompt's text)."""

    def __init__(self, original, rows: list[int]):
        self.original, self.rows = original, torch.tensor(rows)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *a, **k):
        if encoder_hidden_states is None or hidden_states.shape[0] != len(self.rows):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *a, **k)
        tokens, residual, spatial_shape = attention_input(attn, hidden_states, temb)
        query, key = queries_keys(attn, tokens, encoder_hidden_states)
        value = split_heads(attn.to_v(encoder_hidden_states), attn.heads)
        rows = self.rows.to(query.device)
        out = F.scaled_dot_product_attention(query[rows], key[rows], value, scale=attn.scale)
        return attention_output(attn, out.to(value.dtype), residual, spatial_shape)


class SourceTrajectory(StepHooks):
    """Step hooks: after each of the first ``shared_steps`` steps every target row takes the source's latents
    (row 0)."""

    def __init__(self, shared_steps: int):
        self.shared_steps = shared_steps

    def after_step(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        if step < self.shared_steps:
            latents = latents[:1].expand_as(latents).clone()
        return latents


def source_trajectory_for(shared_steps: int) -> SourceTrajectory:
    """The hooks of the ``*shared-start`` methods (``edit(..., hooks=[source_trajectory_for(k)])``)."""
    return SourceTrajectory(shared_steps)


def run(pipe, item, method: str, steps: int, guidance: float, shared_steps: int = 1) -> dict:
    fpe = method.startswith("fpe")
    kw = dict(seed=item.seed, steps=steps, guidance=guidance, progress=False,
              self_replace=DEFAULT_SELF_REPLACE if fpe else "0:0")
    if method.endswith("shared-start"):
        kw["hooks"] = [source_trajectory_for(shared_steps)]
    replacements = {}
    if "cross" in method:
        # batch rows: [uncond source, uncond target, cond source, cond target]; the conditional target takes the
        # conditional source's maps, as FPE edits the conditional half only
        rows = [0, 1, 2, 2] if guidance > 1 else [0, 0]
        for layer in discover_layers(pipe.unet).select("all", "cross", (16, 16)):
            replacements[layer.processor_key] = SourceCrossAttentionMaps(pipe.unet.attn_processors[layer.processor_key],
                                                                         rows)
    with installed_processors(pipe.unet, replacements):
        result = edit(pipe, item.source_prompt, [item.target_prompt], **kw)
    src, tgt = (np.asarray(img.convert("RGB")) for img in result.images)
    return score_edit(src, tgt, item)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--n", type=int, default=20, help="colour swaps (the first N of the shapes benchmark)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--ids", default="", help="only these bench item ids (comma-separated, e.g. color-006,color-008)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {', '.join(METHODS)}")
    ap.add_argument("--shared-steps", type=int, default=1,
                    help="steps after which the *shared-start methods give the target the source's latents")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.shared_steps < 1 or args.shared_steps >= args.steps:
        ap.error(f"--shared-steps {args.shared_steps} must be between 1 and --steps - 1 ({args.steps - 1})")
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}: use {', '.join(METHODS)}")
    torch.set_num_threads(1)
    pipe = load_pipeline(args.model, device="cpu").pipe
    # --ids picks from the bench's full list of colour swaps, --n otherwise takes its first N
    items = edit_items(n_color=max(args.n, 80) if args.ids else args.n, n_shape=0)
    if args.ids:
        wanted = args.ids.split(",")
        missing = sorted(set(wanted) - {item.id for item in items})
        if missing:
            ap.error(f"unknown item id(s) {', '.join(missing)}: use colour-swap ids of `freeprompt bench shapes`")
        items = [item for item in items if item.id in wanted]
    args.out.mkdir(parents=True, exist_ok=True)
    rows, started = [], time.time()
    for item in items:
        for method in methods:
            rows.append({"id": item.id, "method": method, "source_prompt": item.source_prompt,
                         "target_prompt": item.target_prompt, **run(pipe, item, method, args.steps, args.guidance,
                                                            args.shared_steps)})
        print(f"{item.id} done after {time.time() - started:.0f} s", flush=True)
    summary = {}
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        ious = [r["iou"] for r in sel]
        summary[method] = {"n": len(sel), "target_colour": sum(bool(r["attribute_ok"]) for r in sel),
                           "joint": sum(bool(r["joint"]) for r in sel), "iou_median": float(np.median(ious)),
                           "iou_mean": float(np.mean(ious))}
    result = {"model": args.model, "item_ids": [item.id for item in items], "steps": args.steps,
              "guidance": args.guidance, "shared_steps": args.shared_steps, "items": len(items),
              "seconds": round(time.time() - started),
              "summary": summary}
    write_json(args.out / "summary.json", result)
    with open(args.out / "items.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
