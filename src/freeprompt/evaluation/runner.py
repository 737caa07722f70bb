"""``freeprompt eval``: every method over an edit dataset, every target of a source in one batch, each edit scored.

Per (case, method) one call edits every target of the case (generated from the case's seed, or a real image
inverted with ``inversion``); per target one row: the method, prompts, seconds per target and the process's peak
memory so far, and the metrics asked for (``METRICS``). A resumable sweep (``io.sweep``): a (case, method)'s rows go
to the CSV when it finishes, a rerun skips the pairs with every row intact and refuses a changed configuration.
Sharded: with K processes (``accelerate launch -m freeprompt eval ...`` or ``--num-shards``), process i takes the
cases with index % K == i and writes its own CSV; the report reads every shard's rows.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import BadInput
from ..io import sweep
from ..io.sweep import Shards, Sweep, Unit
from .edit_sets import EditCase, EditSet
from .shapes_bench import SCORES_VERSION, EditItem, score_edit

METRICS = ("clip", "cds", "clip_edited", "structure", "psnr", "mse", "ssim", "lpips", "oracle")
COLUMNS = {"clip": ["clip_score"], "cds": ["clip_directional"], "clip_edited": ["clip_edited"],
           "structure": ["structure_distance"], "psnr": ["psnr_outside"], "mse": ["mse_outside"],
           "ssim": ["ssim_outside"], "lpips": ["lpips_outside"],
           "oracle": ["attribute_ok", "iou", "joint", "place_ok", "size_ok", "other_kept", "all_four"]}
BASE = ["case", "target_index", "method", "seed", "source_prompt", "target_prompt", "seconds", "peak_gb"]
KEY = ("case", "method")  # a unit: every target of a case edited by one method
TABLE = "items.csv"


@dataclass
class Scorers:
    """The metric models and what to compute; ``clip`` and ``structure`` may be None (those metrics left out)."""

    metrics: tuple[str, ...]
    clip: object | None = None  # metrics.ClipScorer
    structure: object | None = None  # metrics.StructureDistance
    notes: list[str] = field(default_factory=list)

    def fields(self) -> list[str]:
        return BASE + [c for m in self.metrics for c in COLUMNS[m]]


def check_metrics(names: list[str]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise BadInput(f"unknown metric(s) {', '.join(unknown) or '(none)'}", f"use some of {', '.join(METRICS)}")
    return tuple(names)


def shard_table(out_dir: Path, num_shards: int, shard_index: int) -> Path:
    return Shards(num_shards, shard_index).table(out_dir, TABLE)


def eval_units(dataset: EditSet, methods) -> list[Unit]:
    """A unit per (case, method) writing a row per target; a case's methods share its index, so one process edits
    every method of a case (as earlier runs split the cases, so their shard tables resume)."""
    return [Unit((case.id, name), rows=len(case.targets), index=n, data=(n, case, name))
            for n, case in enumerate(dataset.cases) for name in methods]


def run_eval(pipe, dataset: EditSet, methods: dict, out_dir: Path, settings: dict, scorers: Scorers, *,
             steps: int, guidance: float, inversion: str = "direct", cache=None, model_key: str = "",
             num_shards: int = 1, shard_index: int = 0, progress=None) -> list[dict]:
    """Edit and score every case of this shard with every method; returns this shard's rows."""
    out_dir = Path(out_dir)

    def work(unit: Unit) -> list[dict]:
        n, case, name = unit.data
        return _edit_and_score(pipe, case, name, methods[name], scorers, steps, guidance, inversion, cache,
                               model_key, out_dir if n < 4 else None)

    if "oracle" in scorers.metrics:  # a folder of rows from before the object-swap scores is not resumed
        settings = {**settings, "scores": SCORES_VERSION}
    run = Sweep(out_dir, settings, scorers.fields(), KEY, TABLE, Shards.of(num_shards, shard_index))
    return run.run(eval_units(dataset, methods), work, progress)


def wait_for_shards(out_dir: Path, num_shards: int, poll_s: float = 5.0) -> None:
    """Process 0 of a sharded run waits until every shard has written its table and its ``.done`` marker."""
    sweep.wait_for_shards(out_dir, num_shards, TABLE, poll_s)


def _edit_and_score(pipe, case: EditCase, name: str, method, scorers: Scorers, steps, guidance, inversion, cache,
                    model_key, examples: Path | None) -> list[dict]:
    start = time.perf_counter()
    source_image, mask, images = _edit(pipe, case, method, steps, guidance, inversion, cache, model_key)
    seconds = (time.perf_counter() - start) / len(case.targets)
    if examples is not None:
        _keep_examples(examples, case, name, source_image, images)
    rows = []
    for i, (target, image) in enumerate(zip(case.targets, images)):
        row = {"case": case.id, "target_index": i, "method": name, "seed": case.seed, "source_prompt": case.source,
               "target_prompt": target, "seconds": round(seconds, 3), "peak_gb": round(_peak_gb(), 3)}
        row.update(score(scorers, case, source_image, image, target, mask, i))
        rows.append(row)
    return rows


def _edit(pipe, case: EditCase, method, steps, guidance, inversion, cache, model_key):
    """(the source image the edit is measured against, the edit mask at its size or None, the target images)."""
    from ..diffusion import image_size, latent_shape
    from ..editing.generated import edit
    from ..editing.real import edit_real

    if case.image is None and "render" not in case.extra:
        result = edit(pipe, case.source, case.targets, method=method, seed=case.seed, steps=steps, guidance=guidance,
                      progress=False)
        return result.images[0], _fitted_mask(case.mask, result.images[0].size), result.targets
    size = image_size(pipe, latent_shape(pipe, None, None))
    photo = _photo(case, size)
    result = edit_real(pipe, photo, case.source, case.targets, method=method, inversion=inversion, steps=steps,
                       guidance=guidance, cache=cache, model_key=model_key, progress=False)
    return photo, _fitted_mask(case.mask, size), result.targets


def _photo(case: EditCase, size):
    from PIL import Image

    from ..editing.images import load_image, prepare_image

    if case.image is not None:
        return load_image(case.image, size, "crop")
    return prepare_image(Image.fromarray(case.extra["render"]), size, "crop")


def _fitted_mask(mask, size):
    """The mask brought to ``size`` (width, height) the way the image was (centre crop, nearest)."""
    if mask is None:
        return None
    from PIL import Image

    from ..editing.images import prepare_image

    image = Image.fromarray(np.asarray(mask, np.uint8) * 255)
    return np.asarray(prepare_image(image, size, "crop"))[..., 0] > 127


def score(scorers: Scorers, case: EditCase, source_image, image, target: str, mask, index: int) -> dict:
    """Every metric asked for, for one edited target (nan where a metric does not apply: no mask, no oracle)."""
    from . import metrics as mt

    out, wanted = {}, set(scorers.metrics)
    if scorers.clip is not None and "clip" in wanted:
        out["clip_score"] = scorers.clip.scores([image], [target])[0]
    if scorers.clip is not None and "cds" in wanted:
        out["clip_directional"] = scorers.clip.directional([source_image], [image], [case.source], [target])[0]
    if scorers.clip is not None and "clip_edited" in wanted and mask is not None:
        out["clip_edited"] = scorers.clip.region_scores([image], [target], [mask])[0]
    if scorers.structure is not None and "structure" in wanted:
        out["structure_distance"] = scorers.structure.distances([source_image], [image])[0]
    for name, fn in (("psnr", mt.psnr), ("mse", mt.mse), ("ssim", mt.ssim)):
        if name in wanted:
            out[f"{name}_outside"] = fn(source_image, image, mask)
    if "lpips" in wanted:
        value = mt.lpips_distance(source_image, image, mask)
        out["lpips_outside"] = float("nan") if value is None else value
    if "oracle" in wanted and "color" in case.extra:
        out.update(_oracle(case, source_image, image, index))
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in out.items()}


def _oracle(case: EditCase, source_image, image, index: int) -> dict:
    target_color = case.targets[index].split()[1]  # "a <colour> <shape>"
    item = EditItem(f"{case.id}-{index}", "color", case.seed, case.extra["color"], case.extra["shape"], target_color,
                    case.extra["shape"], "simple")
    scores = score_edit(np.asarray(source_image.convert("RGB")), np.asarray(image.convert("RGB")), item)
    return {key: scores[key] for key in COLUMNS["oracle"]}


def _peak_gb() -> float:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _keep_examples(out_dir: Path, case: EditCase, method: str, source_image, images) -> None:
    from ..io.outputs import labelled_grid, replacing

    folder = out_dir / "examples"
    folder.mkdir(exist_ok=True)
    grid = labelled_grid([source_image, *images[:3]], [case.source, *case.targets[:3]])
    path = folder / f"{case.id}.{method}.png"
    with replacing(path) as tmp:
        grid.save(tmp, format="PNG")
