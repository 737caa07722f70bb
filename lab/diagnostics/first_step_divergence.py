"""When does a colour swap lose the source's object? Runs the first N colour swaps of `freeprompt bench shapes`
with FPE and with plain regeneration, decodes the sampler's prediction of the clean image (x0) at a few denoising
steps for the source and the edited branch, and reports the oracle's object-mask IoU between the two at each of
those steps, split by whether the finished edit kept the object (IoU >= 0.3) or lost it.

If the lost edits already disagree at the first step, the place is decided before FPE's shared self-attention maps
can hold it: at step 0 both branches see the same latents and the same maps, so only what the colour word adds
(through cross-attention and what follows it) can move the predicted object.
A diagnostic of the shapes fixture's development (docs/fixture-history.md), not a method freeprompt ships.

    python -m lab.diagnostics.first_step_divergence --model shapes --n 80 \\
        --out lab/results/first_step_divergence.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from freeprompt.diffusion import ddim_scheduler, decode
from freeprompt.editing.generated import edit
from freeprompt.editing.methods import FPE
from freeprompt.evaluation.shapes_bench import LOST_IOU, edit_items, score_edit
from freeprompt.io.outputs import write_json
from freeprompt.models.loading import load_pipeline
from freeprompt.shapes import oracle

DEFAULT_SELF_REPLACE = str(FPE().self_replace)  # FPE's declared default


class CleanImagePredictions:
    """Records the guided x0 prediction of every UNet call of one `edit` (rows: source, target)."""

    def __init__(self, unet, alphas_cumprod: torch.Tensor, guidance: float):
        self.alphas, self.guidance, self.x0 = alphas_cumprod, guidance, []
        self.handle = unet.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        latents, t = args[0], args[1]
        noise = output[0]
        if self.guidance > 1.0:
            uncond, cond = noise.chunk(2)
            noise, latents = uncond + self.guidance * (cond - uncond), latents.chunk(2)[0]
        alpha = self.alphas[int(t)].to(latents)
        self.x0.append(((latents - (1 - alpha).sqrt() * noise) / alpha.sqrt()).detach())

    def close(self):
        self.handle.remove()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--n", type=int, default=80, help="colour swaps (the first N of the shapes benchmark)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--probe-steps", default="0,1,2,4,8,12", help="denoising steps (0-based) whose x0 is decoded")
    ap.add_argument("--out", type=Path, required=True, help="JSON file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    probes = [int(s) for s in args.probe_steps.split(",")]
    pipe = load_pipeline(args.model, device="cpu").pipe
    alphas = ddim_scheduler(pipe.scheduler.config).alphas_cumprod
    rows, started = [], time.time()
    for item in edit_items(n_color=args.n, n_shape=0):
        for method, self_replace in (("fpe", DEFAULT_SELF_REPLACE), ("plain", "0:0")):
            recorder = CleanImagePredictions(pipe.unet, alphas, args.guidance)
            try:
                result = edit(pipe, item.source_prompt, [item.target_prompt], seed=item.seed, steps=args.steps,
                              guidance=args.guidance, self_replace=self_replace, progress=False)
            finally:
                recorder.close()
            src, tgt = (np.asarray(img.convert("RGB")) for img in result.images)
            final = score_edit(src, tgt, item)
            # one VAE call for every probed step: rows (source, target) per step, in probe order
            with torch.no_grad():
                images = decode(pipe, torch.cat([recorder.x0[k] for k in probes]))
            masks = [oracle.object_mask(np.asarray(img.convert("RGB"))) for img in images]
            ious = {k: round(oracle.mask_iou(masks[2 * i], masks[2 * i + 1]), 4) for i, k in enumerate(probes)}
            rows.append({"id": item.id, "method": method, "final_iou": final["iou"], "joint": final["joint"],
                         "x0_object_iou": ious})
        print(f"{item.id} done after {time.time() - started:.0f} s", flush=True)

    summary = {}
    for method in ("fpe", "plain"):
        sel = [r for r in rows if r["method"] == method]
        groups = {f"kept (final IoU >= {LOST_IOU})": [r for r in sel if r["final_iou"] >= LOST_IOU],
                  f"lost (final IoU < {LOST_IOU})": [r for r in sel if r["final_iou"] < LOST_IOU]}
        summary[method] = {name: {
            "n": len(group),
            "x0_object_iou_median_by_step": {k: float(np.median([r["x0_object_iou"][k] for r in group]))
                                             for k in probes} if group else {},
            f"share apart at step {probes[0]} (x0 object IoU < {LOST_IOU})": (
                round(float(np.mean([r["x0_object_iou"][probes[0]] < LOST_IOU for r in group])), 3)
                if group else None),
        } for name, group in groups.items()}
    result = {"model": args.model, "steps": args.steps, "guidance": args.guidance, "items": args.n,
              "probe_steps": probes, "seconds": round(time.time() - started), "torch": torch.__version__,
              "summary": summary, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result, indent=1)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
