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
EXAMPLES = 4  # the first cases, whose edits are kept as examples/<case>.<method>.png


@dataclass
class Scorers:
    """The metric models and what to compute; ``clip`` and ``structure`` may be None (those metrics left out)."""

    metrics: tuple[str, ...]
    clip: object | None = None  # metrics.ClipScorer
    structure: object | None = None  # metrics.StructureDistance
    notes: list[str] = field(default_factory=list)
    protocol: str = "clean"  # metrics.PROTOCOLS: how the background metrics and the structure input are defined

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
             num_shards: int = 1, shard_index: int = 0, progress=None, save_edits: bool = False) -> list[dict]:
    """Edit and score every case of this shard with every method; returns this shard's rows. ``save_edits`` keeps
    every edit as ``edits/<method>/<case>/target_<k>.png`` (and ``source.png``), the layout ``freeprompt score``
    reads, so the edits can be scored again under another protocol without editing them again."""
    out_dir = Path(out_dir)

    def work(unit: Unit) -> list[dict]:
        n, case, name = unit.data
        return _edit_and_score(pipe, case, name, methods[name], scorers, steps, guidance, inversion, cache,
                               model_key, out_dir if n < EXAMPLES else None, out_dir if save_edits else None)

    if "oracle" in scorers.metrics:  # a folder of rows from before the object-swap scores is not resumed
        settings = {**settings, "scores": SCORES_VERSION}
    run = Sweep(out_dir, settings, scorers.fields(), KEY, TABLE, Shards.of(num_shards, shard_index))
    return run.run(eval_units(dataset, methods), work, progress)


def default_protocol(dataset: EditSet) -> str:
    """``pie-bench`` for PIE-Bench and any set with edit masks (its numbers stand beside the published ones),
    ``clean`` otherwise."""
    masked = any(case.mask is not None for case in dataset.cases)
    return "pie-bench" if dataset.name == "pie-bench" or masked else "clean"


def adopt_legacy(out_dir: Path, settings: dict, dataset: EditSet) -> None:
    """A folder written before ``--protocol`` existed (its settings.json names none) computed what is now the
    clean protocol, except the shapes sets without masks (their background metrics then covered the whole
    image): it resumes under ``--protocol clean`` (its settings.json gains the protocol), and is refused in one
    line otherwise."""
    import json

    from ..io.outputs import write_json

    path = Path(out_dir) / "settings.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return  # the sweep refuses an unreadable settings.json in its own words
    if not isinstance(saved, dict) or "protocol" in saved or not sweep.run_tables(Path(out_dir), TABLE):
        return
    pixels = {"psnr", "mse", "ssim", "lpips"} & set(saved.get("metrics") or [])
    if pixels and any(case.mask is None and "color" in case.extra for case in dataset.cases):
        raise BadInput(f"{out_dir} was computed before --protocol existed, with {', '.join(sorted(pixels))} over "
                       "the whole image, which neither protocol does now", sweep.FRESH_FIX)
    if settings.get("protocol") != "clean":
        raise BadInput(f"{out_dir} was computed before --protocol existed, as what is now the clean protocol",
                       "add --protocol clean to resume it, or choose a new --out folder")
    write_json(path, {**saved, "protocol": "clean"})


def wait_for_shards(out_dir: Path, num_shards: int, poll_s: float = 5.0) -> None:
    """Process 0 of a sharded run waits until every shard has written its table and its ``.done`` marker."""
    sweep.wait_for_shards(out_dir, num_shards, TABLE, poll_s)


def _edit_and_score(pipe, case: EditCase, name: str, method, scorers: Scorers, steps, guidance, inversion, cache,
                    model_key, examples: Path | None, kept: Path | None = None) -> list[dict]:
    start = time.perf_counter()
    source_image, mask, images = _edit(pipe, case, method, steps, guidance, inversion, cache, model_key)
    seconds = (time.perf_counter() - start) / len(case.targets)
    if examples is not None:
        _keep_examples(examples, case, name, source_image, images)
    if kept is not None:
        save_edits(kept / "edits" / name / case.id, source_image, images)
    source_image, mask, images = scoring_view(case, source_image, mask, images, scorers.protocol)
    rows = []
    for i, (target, image) in enumerate(zip(case.targets, images)):
        row = {"case": case.id, "target_index": i, "method": name, "seed": case.seed, "source_prompt": case.source,
               "target_prompt": target, "seconds": round(seconds, 3), "peak_gb": round(_peak_gb(), 3)}
        row.update(score(scorers, case, source_image, image, target, mask, i))
        rows.append(row)
    return rows


def save_edits(folder: Path, source_image, images) -> None:
    """``source.png`` and ``target_<k>.png`` (k from 1, as ``freeprompt edit`` names them) in ``folder``."""
    from ..io.outputs import replacing

    folder.mkdir(parents=True, exist_ok=True)
    for name, image in [("source", source_image)] + [(f"target_{k}", im) for k, im in enumerate(images, 1)]:
        with replacing(folder / f"{name}.png") as tmp:
            image.save(tmp, format="PNG")


def _edit(pipe, case: EditCase, method, steps, guidance, inversion, cache, model_key):
    """(the source image the edit is measured against, the edit mask at its size or None, the target images)."""
    from ..diffusion import image_size, latent_shape
    from ..editing.generated import edit
    from ..editing.real import edit_real

    if case.image is None and "render" not in case.extra:
        result = edit(pipe, case.source, case.targets, method=method, seed=case.seed, steps=steps, guidance=guidance,
                      progress=False)
        return result.images[0], fitted_mask(case.mask, result.images[0].size), result.targets
    size = image_size(pipe, latent_shape(pipe, None, None))
    photo = case_photo(case, size)
    result = edit_real(pipe, photo, case.source, case.targets, method=method, inversion=inversion, steps=steps,
                       guidance=guidance, cache=cache, model_key=model_key, progress=False)
    return photo, fitted_mask(case.mask, size), result.targets


def has_photo(case: EditCase) -> bool:
    return case.image is not None or "render" in case.extra


def case_photo(case: EditCase, size):
    """The case's photo (a file, or the shapes set's render) centre-cropped and resized to ``size`` (w, h)."""
    from PIL import Image

    from ..editing.images import load_image, prepare_image

    if case.image is not None:
        return load_image(case.image, size, "crop")
    return prepare_image(Image.fromarray(case.extra["render"]), size, "crop")


def native_size(case: EditCase, aspect: tuple[int, int]) -> tuple[int, int]:
    """The largest centred crop of the case's photo with the aspect ratio of ``aspect`` (w, h), at the photo's own
    resolution: the whole photo when the aspects agree (PIE-Bench's 512 px photos and a square model)."""
    from PIL import ImageOps

    from ..editing.images import open_image

    if case.image is not None:
        with open_image(case.image) as img:
            width, height = ImageOps.exif_transpose(img).size  # as the photo loads, EXIF rotation applied
    else:
        height, width = case.extra["render"].shape[:2]
    if width * aspect[1] > height * aspect[0]:
        return max(1, round(height * aspect[0] / aspect[1])), height
    return width, max(1, round(width * aspect[1] / aspect[0]))


def scoring_view(case: EditCase, source_image, mask, images, protocol: str):
    """(source, mask, edits) as the metrics see them. Under ``pie-bench`` a case with a photo is scored on the
    dataset's photo at its own resolution (``native_size``: PIE-Bench's 512 px photo), with its mask, the edits
    resized to it (bicubic); otherwise (``clean``, or a generated source) on the images as given: the model's
    size."""
    if protocol != "pie-bench" or not has_photo(case):
        return source_image, mask, images
    from PIL import Image

    size = native_size(case, images[0].size)
    edits = [im if im.size == size else im.convert("RGB").resize(size, Image.BICUBIC) for im in images]
    return case_photo(case, size), fitted_mask(case.mask, size), edits


def scored_at(dataset: EditSet, protocol: str, otherwise: str) -> str:
    """Where the images were compared, for the report's header."""
    if protocol == "pie-bench" and dataset.real:
        width, height = native_size(dataset.cases[0], (1, 1))
        return (f"on the dataset's photos at their own size ({width}x{height} for the first), the edits resized to "
                "them")
    return f"at {otherwise}"


def fitted_mask(mask, size):
    """The mask brought to ``size`` (width, height) the way the image was (centre crop, nearest)."""
    if mask is None:
        return None
    from PIL import Image

    from ..editing.images import prepare_image

    image = Image.fromarray(np.asarray(mask, np.uint8) * 255)
    return np.asarray(prepare_image(image, size, "crop"))[..., 0] > 127


def score(scorers: Scorers, case: EditCase, source_image, image, target: str, mask, index: int) -> dict:
    """Every metric asked for, for one edited target (nan where a metric does not apply: no oracle). The background
    metrics are computed outside ``mask``, else outside the object the shapes oracle finds in the source (the shapes
    sets), else over the whole image."""
    from . import metrics as mt

    out, wanted, protocol = {}, set(scorers.metrics), scorers.protocol
    if mask is None and "color" in case.extra:
        mask = object_region(source_image)
    if scorers.clip is not None and "clip" in wanted:
        out["clip_score"] = scorers.clip.scores([image], [target])[0]
    if scorers.clip is not None and "cds" in wanted:
        out["clip_directional"] = scorers.clip.directional([source_image], [image], [case.source], [target])[0]
    if scorers.clip is not None and "clip_edited" in wanted and mask is not None:
        out["clip_edited"] = scorers.clip.region_scores([image], [target], [mask])[0]
    if scorers.structure is not None and "structure" in wanted:
        out["structure_distance"] = scorers.structure.distances([source_image], [image], protocol)[0]
    for name, fn in (("psnr", mt.psnr), ("mse", mt.mse), ("ssim", mt.ssim)):
        if name in wanted:
            out[f"{name}_outside"] = fn(source_image, image, mask, protocol=protocol)
    if "lpips" in wanted:
        value = mt.lpips_distance(source_image, image, mask, protocol=protocol)
        out["lpips_outside"] = float("nan") if value is None else value
    if "oracle" in wanted and "color" in case.extra:
        out.update(_oracle(case, source_image, image, index))
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in out.items()}


def object_region(source_image) -> np.ndarray:
    """The shapes oracle's object in the source image, grown by one pixel (its anti-aliased edge): the region an
    edit of the shapes sets may change."""
    from ..shapes import oracle

    return oracle.dilate(oracle.object_mask(np.asarray(source_image.convert("RGB"))))


def region_kind(dataset: EditSet) -> str:
    """Where the background metrics are computed: ``object`` (the shapes sets: the object's mask), ``mask`` (the
    dataset's edit masks), ``whole`` (no mask: the whole image)."""
    if any("color" in case.extra for case in dataset.cases):
        return "object"
    return "mask" if any(case.mask is not None for case in dataset.cases) else "whole"


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
    from PIL import Image

    from ..io.outputs import labelled_grid, replacing

    folder = out_dir / "examples"
    folder.mkdir(exist_ok=True)
    first = f"{'photo' if has_photo(case) else 'source'}: {case.source}"
    shown = [im.resize((im.width * 2, im.height * 2), Image.NEAREST) if im.width < 128 else im
             for im in (source_image, *images[:3])]  # small images twice their size, so the labels fit
    grid = labelled_grid(shown, [first, *(f"{method}: {t}" for t in case.targets[:3])])
    path = folder / f"{case.id}.{method}.png"
    with replacing(path) as tmp:
        grid.save(tmp, format="PNG")
