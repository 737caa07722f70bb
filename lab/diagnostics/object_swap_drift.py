"""What moves the object in an FPE object swap ("a red circle" -> "a red square")? For the sources of
``lab.object_swaps`` (every other shape a target of one batched edit, FPE's defaults), records per denoising step
the sampler's prediction of the clean image (x0) of every row three ways: guided (what the sampler steps with), from
the conditional half alone and from the unconditional half alone; and the cross-attention map of each prompt's shape
word (every layer, every step, conditional rows). Decodes the x0s at a few steps and measures where the object is
(the centre of the bounding box of the largest object, since the unconditional half's has no colour) against where
the source's finished object is.

Split by whether the finished swap kept its place (``shapes_bench.score_edit``), it says at which step a moved object
leaves, whether the conditional half (whose self-attention maps FPE replaces) or the unconditional half (which FPE
leaves alone) carries it away, and whether the target word's own cross-attention map sits elsewhere than the source
word's. A diagnostic of issue #37 (docs/object-swaps.md), not a method freeprompt ships.

    python -m lab.diagnostics.object_swap_drift --sources 8 --out lab/results/object_swaps/drift.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from freeprompt.attention.recorder import record_attention
from freeprompt.attention.tokens import word_token_indices
from freeprompt.diffusion import ddim_scheduler, decode
from freeprompt.editing.generated import edit
from freeprompt.editing.methods import build_method
from freeprompt.evaluation.shapes_bench import score_edit
from freeprompt.io.outputs import write_json
from freeprompt.models.loading import load_pipeline
from freeprompt.shapes import oracle, world
from lab.object_swaps import sources, swaps

HALVES = ("guided", "cond", "uncond")


class HalfPredictions:
    """The x0 prediction of every row at every UNet call of one guided edit: guided, conditional and unconditional."""

    def __init__(self, unet, alphas_cumprod: torch.Tensor, guidance: float):
        self.alphas, self.guidance, self.x0 = alphas_cumprod, guidance, []
        self.handle = unet.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        latents, t = args[0].chunk(2)[0], args[1]
        uncond, cond = output[0].chunk(2)
        guided = uncond + self.guidance * (cond - uncond)
        alpha = self.alphas[int(t)].to(latents)
        x0 = lambda eps: ((latents - (1 - alpha).sqrt() * eps) / alpha.sqrt()).detach()  # noqa: E731
        self.x0.append({"guided": x0(guided), "cond": x0(cond), "uncond": x0(uncond)})

    def close(self):
        self.handle.remove()


def centre(mask: np.ndarray):
    box = world.bbox(mask)
    return None if box is None else np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def word_centres(rec, pipe, prompts: list[str], words: list[str]) -> list[np.ndarray]:
    """The centre of mass (pixels of a 64 px image) of each prompt's word map, layers averaged on a 16x16 grid."""
    maps = rec.maps()
    summed = None
    for layer_map in maps.values():
        up = torch.nn.functional.interpolate(layer_map.float()[:, None], size=(16, 16), mode="bilinear")[:, 0]
        summed = up if summed is None else summed + up
    ys, xs = torch.meshgrid(torch.arange(16) + 0.5, torch.arange(16) + 0.5, indexing="ij")
    out = []
    for m in summed:
        m = m.clamp_min(0)
        m = m / m.sum()
        out.append(np.array([(m * xs).sum().item(), (m * ys).sum().item()]) * 4)
    return out


def run_source(pipe, source, steps: int, guidance: float, probes: list[int]) -> list[dict]:
    items = swaps(source, "shape")
    prompts = [source.prompt] + [i.target_prompt for i in items]
    words = [source.shape] + [i.tgt_shape for i in items]
    tokens = [word_token_indices(pipe.tokenizer, p, w, occurrence=None) for p, w in zip(prompts, words)]
    recorder = HalfPredictions(pipe.unet, ddim_scheduler(pipe.scheduler.config).alphas_cumprod, guidance)
    try:
        with record_attention(pipe, kind="cross", layers="all", tokens=tokens) as rec:
            result = edit(pipe, source.prompt, prompts[1:], method=build_method("fpe"), seed=source.seed, steps=steps,
                          guidance=guidance, progress=False, hooks=[rec])
    finally:
        recorder.close()
    images = [np.asarray(img.convert("RGB")) for img in result.images]
    src_mask = oracle.color_mask(images[0], source.color)
    src_centre = centre(src_mask)
    word_at = word_centres(rec, pipe, prompts, words)
    decoded = {}
    for half in HALVES:
        stack = torch.cat([recorder.x0[s][half] for s in probes])
        decoded[half] = [np.asarray(im.convert("RGB")) for im in decode(pipe, stack.to(pipe.vae.dtype))]
    rows = []
    for n, item in enumerate(items, 1):
        final = score_edit(images[0], images[n], item)
        row = {"source": source.id, "target": item.target_prompt, "place_ok": final["place_ok"],
               "place_px": final["place_px"], "all_four": final["all_four"],
               "word_offset_px": float(np.linalg.norm(word_at[n] - word_at[0])),
               "source_word_to_object_px": float(np.linalg.norm(word_at[0] - src_centre)) if src_centre is not None
               else None}
        for half in HALVES:
            for k, step in enumerate(probes):
                image = decoded[half][k * len(prompts) + n]
                c = centre(oracle.largest_component(oracle.object_mask(image)))  # the uncond half has no colour
                far = None if c is None or src_centre is None else float(np.linalg.norm(c - src_centre))
                row[f"{half}@{step}"] = far
        rows.append(row)
    return rows


def summarise(rows: list[dict], probes: list[int]) -> dict:
    out = {}
    for label, sel in (("kept", [r for r in rows if r["place_ok"]]), ("moved", [r for r in rows if not r["place_ok"]])):
        entry = {"n": len(sel), "word_offset_px_median": float(np.median([r["word_offset_px"] for r in sel]))
                 if sel else None}
        for half in HALVES:
            entry[half] = {}
            for step in probes:
                values = [r[f"{half}@{step}"] for r in sel if r[f"{half}@{step}"] is not None]
                entry[half][step] = {"median_px": round(float(np.median(values)), 2) if values else None,
                                     "found": len(values)}
        out[label] = entry
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=8)
    ap.add_argument("--list-seed", type=int, default=100)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--probe-steps", default="0,2,5,10,20,30,40,49")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    probes = [int(s) for s in args.probe_steps.split(",")]
    pipe = load_pipeline("shapes", device="cpu").pipe
    rows, start = [], time.time()
    for source in sources(args.list_seed, args.sources):
        rows += run_source(pipe, source, args.steps, args.guidance, probes)
        print(f"{source.id}: {len(rows)} swaps, {time.time() - start:.0f} s", flush=True)
    write_json(args.out, {"params": vars(args) | {"out": str(args.out)}, "summary": summarise(rows, probes),
                          "rows": rows})
    print(json.dumps(summarise(rows, probes), indent=1))


if __name__ == "__main__":
    main()
