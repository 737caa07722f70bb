"""The shapes benchmark: seeded colour and shape edits on the fixture model, scored by the oracle.

Per edit and method: did the target attribute appear (colour-specific mask of the target colour; shape read
from the mask of the object's colour), how well the source's structure survived (IoU between the source
object's mask and the edited object's mask, each taken with its own colour, so a failed edit that leaves the
old object in place scores 0, not 1), and background preservation (PSNR outside both objects). The joint
rate "attribute reached AND IoU >= 0.8" is the headline of colour swaps.

A shape swap (an object swap: "a red circle" -> "a red square") never reaches that IoU when it is right, so it is
scored as an object swap: the target shape by the oracle's classifier, its place (the distance between the
centres of the two objects' bounding boxes, in pixels and as a fraction of the image side: the world places an
object by that centre, so a perfect swap scores 0 whatever the shapes, while centroids of a circle and a triangle
of one box differ by 1/7 of its side; the centroid distance is kept beside it), its size (the ratio of the
bounding boxes' longer sides) and its colour (the edited image's main object still has the source's colour); "all
four" is the headline of shape swaps. The same columns are filled for colour swaps, where the attribute left
alone is the shape. Every editing method runs on the same items, seeds and
noise (``fpe``, ``p2p``, ``masactrl``, ``pnp``, combinations such as ``fpe+p2p``, and ``plain``: the target
prompt generated from the same seed, no editing).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..diffusion.denoisers import network_of
from ..editing.images import psnr
from ..errors import BadInput
from ..io.outputs import labelled_grid, replacing, write_json, write_text_atomic
from ..io.sweep import Shards, Sweep, Unit, all_rows, is_sharded
from ..shapes import oracle, world

JOINT_IOU = 0.8
LOST_IOU = 0.3  # below this the edited object is elsewhere (or gone): the structure was not kept at all
PLACE_PX = 4.0  # place kept: bounding-box centres at most this far apart, in pixels of a 64 px image (1/16 side)
SIZE_RATIO = (0.8, 1.25)  # size kept: the longer bounding-box side within this ratio of the source's
OBJECT_SCORES = ["place_px", "place_frac", "centroid_px", "size_ratio", "place_ok", "size_ok", "other_kept",
                 "all_four"]
FIELDS = ["id", "kind", "method", "seed", "source_prompt", "target_prompt", "source_ok", "target_found", "attribute_ok",
          "iou", "joint", "background_psnr", "source_area", "target_area", "target_shape_read", *OBJECT_SCORES]
SCORES_VERSION = 2  # in the sweep's settings: 2 added OBJECT_SCORES, so a folder of older rows is not resumed
KEY = ("id", "method")  # a unit: one item edited by one method
TABLE = "items.csv"


@dataclass(frozen=True)
class EditItem:
    id: str
    kind: str  # "color" or "shape"
    seed: int
    src_color: str
    src_shape: str
    tgt_color: str
    tgt_shape: str
    template: str = "simple"

    @property
    def source_prompt(self) -> str:
        return world.caption(self.template, self.src_color, self.src_shape)

    @property
    def target_prompt(self) -> str:
        return world.caption(self.template, self.tgt_color, self.tgt_shape)


def check_vocabulary(colors, shapes) -> tuple[list[str], list[str]]:
    colors, shapes = list(colors or world.COLORS), list(shapes or world.SHAPES)
    for kind, words, known in (("colour", colors, world.COLORS), ("shape", shapes, world.SHAPES)):
        unknown = [w for w in words if w not in known]
        if unknown:
            raise BadInput(f"unknown {kind} word(s) {', '.join(unknown)} in the shapes benchmark",
                           f"use {', '.join(known)}")
        if len(set(words)) < 2:
            raise BadInput(f"the shapes benchmark needs at least two distinct {kind} words", "give more words")
    return colors, shapes


def check_templates(templates) -> tuple[str, ...]:
    """Caption templates of single-object scenes (every template but ``pair``), or a one-line error."""
    templates = tuple(templates)
    supported = ", ".join(t for t in world.TEMPLATES if t != "pair")
    unknown = [t for t in templates if t not in world.TEMPLATES or t == "pair"]
    if unknown or not templates:
        problem = f"unknown or unsupported template(s) {', '.join(unknown)}" if unknown else "no caption template given"
        raise BadInput(problem, f"use {supported}")
    return templates


def edit_items(n_color: int = 80, n_shape: int = 40, seed: int = 0, colors=None, shapes=None,
               templates=("simple",)) -> list[EditItem]:
    """A fixed, seeded list of colour swaps and shape swaps."""
    colors, shapes = check_vocabulary(colors, shapes)
    templates = check_templates(templates)
    rng = np.random.default_rng(seed)
    items = []
    for kind, count in (("color", n_color), ("shape", n_shape)):
        for i in range(count):
            c1, s1 = colors[rng.integers(len(colors))], shapes[rng.integers(len(shapes))]
            if kind == "color":
                c2, s2 = colors[(colors.index(c1) + 1 + rng.integers(len(colors) - 1)) % len(colors)], s1
            else:
                c2, s2 = c1, shapes[(shapes.index(s1) + 1 + rng.integers(len(shapes) - 1)) % len(shapes)]
            template = templates[rng.integers(len(templates))]
            items.append(EditItem(f"{kind}-{i:03d}", kind, int(rng.integers(2**31 - 1)), c1, s1, c2, s2, template))
    return items


def score_edit(source: np.ndarray, target: np.ndarray, item: EditItem) -> dict:
    """Oracle scores of one (source image, edited image) pair."""
    min_area = 0.01 * source.shape[0] * source.shape[1]
    src_mask = oracle.color_mask(source, item.src_color)
    tgt_mask = oracle.color_mask(target, item.tgt_color)
    src_shape = oracle.classify_shape(src_mask) if src_mask.sum() >= min_area else None
    tgt_shape = oracle.classify_shape(tgt_mask) if tgt_mask.sum() >= min_area else None
    found = bool(tgt_mask.sum() >= min_area)
    attribute_ok = found if item.kind == "color" else tgt_shape == item.tgt_shape
    iou = oracle.mask_iou(src_mask, tgt_mask)
    objects = oracle.object_mask(source) | oracle.object_mask(target) | src_mask | tgt_mask
    outside = ~oracle.dilate(objects)
    kept = object_kept(src_mask, tgt_mask if found else np.zeros_like(tgt_mask), source.shape[1])
    if item.kind == "color":  # the attribute the edit leaves alone: the shape of a colour swap
        other = tgt_shape == item.src_shape
    else:  # the colour of an object swap: the edited image's main object still has it
        other = found and oracle.read(target).color == item.tgt_color
    return {
        "source_ok": bool(src_shape == item.src_shape),
        "target_found": found,
        "attribute_ok": bool(attribute_ok),
        "iou": round(iou, 4),
        "joint": bool(attribute_ok and iou >= JOINT_IOU),
        "background_psnr": round(_psnr(source[outside], target[outside]), 2),
        "source_area": int(src_mask.sum()),
        "target_area": int(tgt_mask.sum()),
        "target_shape_read": tgt_shape or "",
        **kept,
        "other_kept": bool(other),
        "all_four": bool(attribute_ok and kept["place_ok"] and kept["size_ok"] and other),
    }


def object_kept(source_mask: np.ndarray, target_mask: np.ndarray, side: int) -> dict:
    """Where and how big the edited object is against the source's: the distance of their bounding-box centres
    (pixels, and as a fraction of the image ``side``), of their centroids, and the ratio of their longer
    bounding-box sides; ``place_ok`` within ``PLACE_PX`` (scaled to ``side``), ``size_ok`` within ``SIZE_RATIO``.
    An empty mask keeps nothing (nan distances)."""
    boxes = [world.bbox(m) for m in (source_mask, target_mask)]
    if None in boxes:
        return {"place_px": math.nan, "place_frac": math.nan, "centroid_px": math.nan, "size_ratio": math.nan,
                "place_ok": False, "size_ok": False}
    centres = [np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]) for b in boxes]
    centroids = [np.array([np.nonzero(m)[1].mean(), np.nonzero(m)[0].mean()]) for m in (source_mask, target_mask)]
    place = float(np.linalg.norm(centres[1] - centres[0]))
    sides = [max(b[2] - b[0], b[3] - b[1]) for b in boxes]
    ratio = sides[1] / sides[0]
    return {"place_px": round(place, 2), "place_frac": round(place / side, 4),
            "centroid_px": round(float(np.linalg.norm(centroids[1] - centroids[0])), 2),
            "size_ratio": round(ratio, 3), "place_ok": bool(place <= PLACE_PX * side / 64),
            "size_ok": bool(SIZE_RATIO[0] <= ratio <= SIZE_RATIO[1])}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float("nan") if a.size == 0 else psnr(a, b)  # nan: the objects cover the whole image


def edit_units(items: list[EditItem], methods) -> list[Unit]:
    """A unit per (item, method); an item's methods share its index, so one process runs every method of an item."""
    return [Unit((item.id, name), index=n, data=(n, item, name)) for n, item in enumerate(items) for name in methods]


def run_edits(pipe, items: list[EditItem], out_dir: Path, steps: int, guidance: float, methods: dict,
              progress=None, examples: int = 8, model: str = "", *, num_shards: int = 1,
              shard_index: int = 0) -> list[dict]:
    """Run every item of this shard (process ``shard_index`` of ``num_shards`` takes the items with index %
    num_shards == shard_index) with every method (``{name: Method}``); returns this shard's rows. Resumable: rows
    already in the table are skipped, provided the folder's settings.json says they were made with the same model,
    settings, methods and items. ``progress(items done, items)`` after every item of this shard."""
    from ..editing.generated import edit

    dtype = str(network_of(pipe).dtype).removeprefix("torch.")
    settings = {"model": model, "scores": SCORES_VERSION, "dtype": dtype,
                "steps": steps, "guidance": guidance, "methods": {name: m.options() for name, m in methods.items()},
                "items": [[item.id, item.seed, item.source_prompt, item.target_prompt] for item in items]}

    def work(unit: Unit) -> list[dict]:
        n, item, name = unit.data
        result = edit(pipe, item.source_prompt, [item.target_prompt], method=methods[name], seed=item.seed,
                      steps=steps, guidance=guidance, progress=False)
        src, tgt = (np.asarray(img.convert("RGB")) for img in result.images)
        if n < examples:  # kept per edit, so a resumed run's sheet still shows every example
            _save_example(Path(out_dir) / "examples" / f"{n:03d}-{name}.png", item, name, result.images)
        return [{"id": item.id, "kind": item.kind, "method": name, "seed": item.seed,
                 "source_prompt": item.source_prompt, "target_prompt": item.target_prompt,
                 **score_edit(src, tgt, item)}]

    run = Sweep(Path(out_dir), settings, FIELDS, KEY, TABLE, Shards.of(num_shards, shard_index))
    return run.run(edit_units(items, methods), work, _by_item(progress, len(methods)))


def _by_item(progress, per_item: int):
    """A sweep's progress callback that calls ``progress(items done, items)`` once every method of an item ran."""
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        if done % per_item == 0:
            progress(done // per_item, total // per_item)

    return report


def generation_check(pipe, n: int, steps: int, guidance: float, seed: int = 1, colors=None, shapes=None) -> dict:
    """How often plain generation of "a <color> <shape>" shows the prompted colour and shape."""
    from ..editing.generated import edit

    colors, shapes = check_vocabulary(colors, shapes)
    rng = np.random.default_rng(seed)
    color_hits = shape_hits = 0
    for i in range(n):
        color, shape = colors[i % len(colors)], shapes[(i // len(colors)) % len(shapes)]
        prompt = world.caption("simple", color, shape)
        image = edit(pipe, prompt, [prompt], seed=int(rng.integers(2**31 - 1)), steps=steps, guidance=guidance,
                     self_replace="0:0", progress=False).images[0]
        reading = oracle.read(np.asarray(image.convert("RGB")), color)
        color_hits += reading.color == color and reading.mask.sum() >= 0.01 * reading.mask.size
        shape_hits += reading.shape == shape
    return {"samples": n, "color_rate": color_hits / n, "shape_rate": shape_hits / n}


def summarise(rows: list[dict]) -> list[dict]:
    """Per method and kind of edit (colour, shape, all): n and the rates and medians of the scores. The object-swap
    scores (``OBJECT_SCORES``) are None for rows written before them."""
    table = []
    for method in sorted({r["method"] for r in rows}, key=lambda m: (m != "fpe", m)):
        for kind in ("color", "shape", "all"):
            sel = [r for r in rows if r["method"] == method and (kind == "all" or r["kind"] == kind)]
            if not sel:
                continue
            flt = lambda key: [float(r[key]) for r in sel]  # noqa: E731, B023 - called in this iteration
            truth = lambda key: np.mean([str(r[key]) == "True" for r in sel])  # noqa: E731, B023
            bg = [v for v in flt("background_psnr") if not math.isnan(v)]
            table.append({
                "method": method, "edits": kind, "n": len(sel),
                "source_ok": truth("source_ok"), "attribute": truth("attribute_ok"),
                "iou_median": float(np.median(flt("iou"))), "iou_mean": float(np.mean(flt("iou"))),
                "joint": truth("joint"), "background_psnr_median": float(np.median(bg)) if bg else float("nan"),
                **_object_summary(sel),
            })
    return table


def _object_summary(rows: list[dict]) -> dict:
    """Place kept, size kept, the other attribute kept and all four (rates, with all four's 95 % Wilson interval),
    and the median place and size ratio; None for each when the rows predate them."""
    keys = ("place_ok", "size_ok", "other_kept", "all_four", "all_four_low", "all_four_high", "place_px_median",
            "size_ratio_median")
    if any(r.get("all_four") in (None, "") for r in rows):
        return dict.fromkeys(keys)
    rates = {k: float(np.mean([str(r[k]) == "True" for r in rows])) for k in keys[:4]}
    low, high = wilson(sum(str(r["all_four"]) == "True" for r in rows), len(rows))
    finite = lambda key: [float(r[key]) for r in rows if math.isfinite(float(r[key]))]  # noqa: E731
    median = lambda key: float(np.median(finite(key))) if finite(key) else float("nan")  # noqa: E731
    return {**rates, "all_four_low": low, "all_four_high": high, "place_px_median": median("place_px"),
            "size_ratio_median": median("size_ratio")}


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a rate of ``hits`` in ``n`` (95 % by default)."""
    if n == 0:
        return float("nan"), float("nan")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _word_in(prompt: str, vocabulary) -> str:
    return next((w for w in prompt.split() if w in vocabulary), "")


def breakdown(rows: list[dict]) -> dict[str, list[dict]]:
    """The colour swaps grouped by the object's shape and by each colour involved (as source or target colour):
    which objects and colours a method keeps in place. Per group and method: n, joint rate, edits with IoU below
    ``LOST_IOU``, mean IoU."""
    swaps = [r for r in rows if r["kind"] == "color"]
    methods = sorted({r["method"] for r in swaps}, key=lambda m: (m != "fpe", m))
    keys_of = {
        "shape": (world.SHAPES, lambda r: {_word_in(r["source_prompt"], world.SHAPES)}),
        "colour": (world.COLORS, lambda r: {_word_in(r[k], world.COLORS) for k in ("source_prompt", "target_prompt")}),
    }
    result = {}
    for grouping, (vocabulary, keys) in keys_of.items():
        table = []
        for word in vocabulary:
            entry = {grouping: word}
            for method in methods:
                sel = [r for r in swaps if r["method"] == method and word in keys(r)]
                if sel:
                    ious = [float(r["iou"]) for r in sel]
                    entry[method] = {"n": len(sel), "joint": float(np.mean([str(r["joint"]) == "True" for r in sel])),
                                     "lost": sum(i < LOST_IOU for i in ious), "iou_mean": float(np.mean(ious))}
            if len(entry) > 1:
                table.append(entry)
        result[grouping] = table
    return result


def breakdown_markdown(groups: dict[str, list[dict]]) -> str:
    parts = []
    for grouping, table in groups.items():
        if not table:
            continue
        methods = [m for m in table[0] if m != grouping]
        head = f"| {grouping} | n | " + " | ".join(f"{m} joint | {m} IoU<{LOST_IOU} | {m} IoU mean" for m in methods)
        lines = [f"Colour swaps by {'the object' if grouping == 'shape' else 'colour (source or target)'}:", "",
                 head + " |", "|---|---|" + "---|---|---|" * len(methods)]
        for entry in table:
            cells = [f"{entry[m]['joint']:.0%} | {entry[m]['lost']} | {entry[m]['iou_mean']:.2f}" if m in entry
                     else "- | - | -" for m in methods]
            n = next(entry[m]["n"] for m in methods if m in entry)
            lines.append(f"| {entry[grouping]} | {n} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def markdown(table: list[dict], generation: dict | None = None) -> str:
    lines = ["| method | edits | n | source read OK | target attribute | mask IoU median (mean) | "
             f"attribute AND IoU>={JOINT_IOU} | background PSNR median (dB) |", "|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['method']} | {r['edits']} | {r['n']} | {r['source_ok']:.0%} | {r['attribute']:.0%} | "
                     f"{r['iou_median']:.2f} ({r['iou_mean']:.2f}) | {r['joint']:.0%} | "
                     f"{r['background_psnr_median']:.1f} |")
    objects = object_markdown(table)
    if objects:
        lines += ["", objects.rstrip("\n")]
    if generation:
        lines += ["", f"Generation ({generation['samples']} samples of \"a <color> <shape>\"): prompted colour "
                      f"{generation['color_rate']:.0%}, prompted shape {generation['shape_rate']:.0%}."]
    return "\n".join(lines) + "\n"


def object_markdown(table: list[dict]) -> str:
    """The shape swaps scored as object swaps: a row per method ("" when there are none, or rows predate them)."""
    rows = [r for r in table if r["edits"] == "shape" and r["all_four"] is not None]
    if not rows:
        return ""
    lines = [f"Object swaps (the shape swaps): target shape by the oracle's classifier, place kept (bounding-box "
             f"centres at most {PLACE_PX:g} px of 64 apart), size kept (longer bounding-box side within "
             f"{SIZE_RATIO[0]:g}-{SIZE_RATIO[1]:g}x), colour kept, and all four with its 95 % interval:", "",
             "| method | n | target shape | place kept | place median (px) | size kept | size ratio median | "
             "colour kept | all four [95 % CI] |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['n']} | {r['attribute']:.0%} | {r['place_ok']:.0%} | "
                     f"{r['place_px_median']:.1f} | {r['size_ok']:.0%} | {r['size_ratio_median']:.2f} | "
                     f"{r['other_kept']:.0%} | **{r['all_four']:.0%}** [{r['all_four_low']:.0%}-"
                     f"{r['all_four_high']:.0%}] |")
    return "\n".join(lines) + "\n"


def _save_example(path: Path, item, method: str, images) -> None:
    path.parent.mkdir(exist_ok=True)
    with replacing(path) as tmp:
        labelled_grid(images, [f"{item.source_prompt}", f"{method}: {item.target_prompt}"]).save(tmp, format="PNG")


def _example_sheet(files: list[Path], path: Path) -> None:
    """Two example rows side by side per line, from the saved rows (of this run and of the runs it resumed)."""
    from PIL import Image

    if not files:
        return
    rows = [Image.open(f).convert("RGB") for f in files]
    w, h = rows[0].size
    sheet = Image.new("RGB", (w * 2, h * math.ceil(len(rows) / 2)), "white")
    for i, row in enumerate(rows):
        sheet.paste(row, ((i % 2) * w, (i // 2) * h))
    with replacing(path) as tmp:
        sheet.save(tmp, format="PNG")


def write_report(out_dir: Path, rows: list[dict], generation: dict | None, params: dict) -> str:
    """summary.md, run.json and the examples sheet of ``rows``, or of every shard's rows when the run in ``out_dir``
    was sharded (call it once every shard is done: ``io.sweep.wait_for_shards``)."""
    from ..io.runinfo import package_versions

    out_dir = Path(out_dir)
    if is_sharded(out_dir, TABLE):
        rows = all_rows(out_dir, TABLE)
    _example_sheet(sorted((out_dir / "examples").glob("*.png")), out_dir / "examples.png")
    table, groups = summarise(rows), breakdown(rows)
    text = markdown(table, generation)
    if any(groups.values()):
        text += "\n" + breakdown_markdown(groups)
    write_text_atomic(out_dir / "summary.md", text)
    write_json(out_dir / "run.json", {"params": params, "summary": table, "breakdown": groups, "generation": generation,
                                      "versions": package_versions(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    return text

