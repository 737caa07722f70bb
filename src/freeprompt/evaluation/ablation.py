"""The paper's replace-step ablation (Figs 10-11): what replacing cross-attention maps, self-attention maps, or both
does to an edit, by the fraction of steps replaced and the layers.

A cell is (type, layer set, ratio r): ``cross`` replaces the cross-attention maps (Prompt-to-Prompt's replace) in
the layer set for steps 0:r; ``self`` replaces the self-attention maps (FPE) in the layer set for steps 0:r;
``both`` does FPE's at 0:r and P2P's cross replacement at 0:``BOTH_CROSS`` (0.8), both in the layer set. Every
cell runs on every item (a source and a target prompt with a seed) from the same noise. On the shapes fixture the
items are seeded colour and shape swaps and every edit is scored by the oracle (target attribute, mask IoU with
the source's object, joint rate; for the shape swaps the object-swap scores: place, size and colour kept and "all
four", ``shapes_bench.score_edit``), so the figure has numbers under it; on another model the cells are images only.
Resumable (``io.sweep``): each finished edit is a row of ``cells.csv``, written as it finishes; shardable: each
process takes every K-th (item, cell) and writes its own table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..editing.methods import FPE, P2P, Combined
from ..errors import BadInput
from ..io.outputs import replacing
from ..io.sweep import Shards, Sweep, Unit, all_rows, is_sharded
from .shapes_bench import SCORES_VERSION, EditItem, score_edit

TYPES = ("cross", "self", "both")
DEFAULT_LAYER_SETS = ("all", "4-14", "<=32x32")
BOTH_CROSS = 0.8
SCORES = ["attribute_ok", "iou", "joint", "background_psnr", "place_ok", "size_ok", "other_kept", "all_four"]
FIELDS = ["item", "seed", "source_prompt", "target_prompt", "type", "layers", "ratio"] + SCORES
KEY = ("item", "type", "layers", "ratio")  # a unit: one item edited in one cell
TABLE = "cells.csv"


@dataclass(frozen=True)
class Cell:
    type: str
    layers: str
    ratio: float

    def method(self):
        steps = f"0:{self.ratio:g}"
        if self.type == "self":
            return FPE(self_replace=steps, layers=self.layers)
        if self.type == "cross":
            return P2P(cross_replace=steps, self_replace="0:0", cross_layers=self.layers)
        return Combined((FPE(self_replace=steps, layers=self.layers),
                         P2P(cross_replace=f"0:{BOTH_CROSS:g}", self_replace="0:0", cross_layers=self.layers)))

    def key(self) -> tuple:
        return self.type, self.layers, f"{self.ratio:g}"


@dataclass(frozen=True)
class AblationItem:
    id: str
    seed: int
    source: str
    target: str
    shapes_item: EditItem | None = None  # scored by the oracle when set


def _joint(pipe) -> bool:
    """Whether the image tokens of ``pipe`` attend in joint attention (SD3, FLUX.1): text and image in one softmax."""
    from ..attention import discover_layers
    from ..diffusion.denoisers import network_of

    return getattr(pipe, "unet", None) is None and bool(discover_layers(network_of(pipe)).of_kind("joint"))


def defaults_for(pipe) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(types, layer sets) when none are given: the paper's on a UNet; on a diffusion transformer, whose layers share
    one token grid (a token bound selects all or none, 4-14 is a UNet's numbering), every layer; on joint attention
    no ``both`` (see ``check_types``)."""
    if getattr(pipe, "unet", None) is not None:
        return TYPES, DEFAULT_LAYER_SETS
    return (tuple(t for t in TYPES if t != "both") if _joint(pipe) else TYPES), ("all",)


def check_types(pipe, types) -> None:
    """``both`` replaces self- and cross-attention maps in one layer's two attentions; joint attention has one."""
    if "both" in types and _joint(pipe):
        raise BadInput("--types both (self- and cross-attention replaced together) is not defined on joint attention "
                       "(SD3, FLUX.1), where text and image tokens share one softmax", "use --types cross,self")


def grid(types, layer_sets, ratios) -> list[Cell]:
    """Every cell, checked: known types, non-empty layer sets, ratios in (0, 1]; repeated values are taken once."""
    unknown = [t for t in types if t not in TYPES]
    if unknown or not types:
        raise BadInput(f"unknown ablation type(s) {', '.join(unknown) or '(none)'}", f"use {', '.join(TYPES)}")
    bad = [r for r in ratios if not 0.0 < r <= 1.0]
    if bad or not ratios:
        raise BadInput(f"replace ratios must be in (0, 1], got {bad or 'none'}", "use e.g. --ratios 0.1:0.9:0.1")
    if not layer_sets or any(not str(layers).strip() for layers in layer_sets):
        raise BadInput("an empty layer set was given", "use e.g. --layers all --layers 4-14")
    types, layer_sets = list(dict.fromkeys(types)), list(dict.fromkeys(str(s).strip() for s in layer_sets))
    ratios = list(dict.fromkeys(float(r) for r in ratios))
    return [Cell(t, layers, r) for t in types for layers in layer_sets for r in ratios]


MAX_RATIOS = 1000


def parse_ratios(text: str) -> list[float]:
    """``0.1,0.5,0.9`` or a range ``START:STOP:STEP`` (inclusive); at most ``MAX_RATIOS`` values, counted before
    any is made."""
    fix = "write e.g. 0.1:0.9:0.1 or 0.2,0.4,0.8"
    try:
        if text.count(":") == 2:
            start, stop, step = (float(x) for x in text.split(":"))
            span = (stop - start) / step + 1e-9
        else:
            ratios = [float(x) for x in text.split(",", MAX_RATIOS + 1)[:MAX_RATIOS + 1] if x.strip()]
    except (ValueError, ZeroDivisionError):
        raise BadInput(f"cannot read ratios {text!r}", fix) from None
    if text.count(":") == 2:
        if not math.isfinite(span) or not 0 <= span < MAX_RATIOS:
            raise BadInput(f"ratios {text!r} give {'no' if span < 0 else 'too many'} values (1-{MAX_RATIOS})", fix)
        ratios = [round(start + i * step, 6) for i in range(int(math.floor(span)) + 1)]
    if not ratios or len(ratios) > MAX_RATIOS:  # each value's range is checked by grid()
        raise BadInput(f"ratios {text!r} give {len(ratios)} values, not 1-{MAX_RATIOS}", fix)
    return ratios


def cell_units(items: list[AblationItem], cells: list[Cell]) -> list[Unit]:
    """A unit per (item, cell), each its own index: an ablation has few items and many cells, so processes split
    the cells."""
    pairs = [(n, item, cell) for n, item in enumerate(items) for cell in cells]
    return [Unit((item.id, *cell.key()), index=i, data=(n, item, cell)) for i, (n, item, cell) in enumerate(pairs)]


def run_ablation(pipe, items: list[AblationItem], cells: list[Cell], out_dir: Path, steps: int, guidance: float,
                 model: str = "", progress=None, *, num_shards: int = 1, shard_index: int = 0) -> list[dict]:
    """Every cell on every item, resumable; process ``shard_index`` of ``num_shards`` takes every
    ``num_shards``-th (item, cell) and returns its rows; ``progress(done, total)`` after each of them. The first
    item's images are kept in ``images/`` for the figure."""
    from ..editing.generated import edit

    settings = {"model": model, "scores": SCORES_VERSION, "steps": steps, "guidance": guidance,
                "cells": [list(c.key()) for c in cells],
                "items": [[i.id, i.seed, i.source, i.target] for i in items]}

    def work(unit: Unit) -> list[dict]:
        n, item, cell = unit.data
        result = edit(pipe, item.source, [item.target], method=cell.method(), seed=item.seed, steps=steps,
                      guidance=guidance, progress=False)
        if n == 0:
            _save_image(result.images[0], Path(out_dir) / "images" / "source.png")
            _save_image(result.images[1], image_path(out_dir, cell))
        return [_row(item, cell, result.images)]

    run = Sweep(Path(out_dir), settings, FIELDS, KEY, TABLE, Shards.of(num_shards, shard_index))
    return run.run(cell_units(items, cells), work, progress)


def image_path(out_dir: Path, cell: Cell) -> Path:
    """Where the first item's edit of ``cell`` is kept."""
    layers = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in cell.layers)
    return Path(out_dir) / "images" / f"{cell.type}.{layers}.{cell.ratio:g}.png"


def _save_image(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        image.save(tmp, format="PNG")


def _row(item: AblationItem, cell: Cell, images) -> dict:
    row = {"item": item.id, "seed": item.seed, "source_prompt": item.source, "target_prompt": item.target,
           "type": cell.type, "layers": cell.layers, "ratio": f"{cell.ratio:g}"}
    if item.shapes_item is not None:
        src, tgt = (np.asarray(img.convert("RGB")) for img in images)
        scores = score_edit(src, tgt, item.shapes_item)
        row.update({key: scores[key] for key in SCORES})
    return row


def summarise(rows: list[dict]) -> list[dict]:
    """Per cell: n, target attribute rate, IoU median, joint rate (shapes items only); and over the cell's shape
    swaps (items named ``shape-*``) their number and the object-swap rates: place kept, size kept and all four
    (None where the cell has no shape swap, or rows from before those scores)."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("iou") not in (None, ""):
            cells.setdefault((r["type"], r["layers"], r["ratio"]), []).append(r)
    table = []
    for (kind, layers, ratio), sel in cells.items():
        rate = lambda key, chosen: float(np.mean([str(r[key]) == "True" for r in chosen]))  # noqa: E731
        swaps = [r for r in sel if str(r["item"]).startswith("shape") and r.get("all_four") not in (None, "")]
        table.append({"type": kind, "layers": layers, "ratio": float(ratio), "n": len(sel),
                      "attribute": rate("attribute_ok", sel),
                      "iou_median": float(np.median([float(r["iou"]) for r in sel])), "joint": rate("joint", sel),
                      "object_n": len(swaps), **{f"object_{key}": rate(key, swaps) if swaps else None
                                                 for key in ("place_ok", "size_ok", "all_four")}})
    order = {layers: i for i, layers in enumerate(dict.fromkeys(r["layers"] for r in rows))}
    return sorted(table, key=lambda e: (TYPES.index(e["type"]), order[e["layers"]], e["ratio"]))


def figure(out_dir: Path, cells: list[Cell], scale: int = 2):
    """The image grid: a row per (type, layers), a column per ratio, the source image first; a label above each
    column and at the start of each row."""
    from PIL import Image, ImageDraw

    source = Image.open(Path(out_dir) / "images" / "source.png").convert("RGB")
    w, h = source.width * scale, source.height * scale
    rows = list(dict.fromkeys((c.type, c.layers) for c in cells))
    ratios = list(dict.fromkeys(c.ratio for c in cells))
    left, top = 110, 18
    sheet = Image.new("RGB", (left + w * (len(ratios) + 1), top + h * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((left + 3, 3), "source", fill="black")
    for j, ratio in enumerate(ratios, 1):
        draw.text((left + j * w + 3, 3), f"r = {ratio:g}", fill="black")
    for i, (kind, layers) in enumerate(rows):
        y = top + i * h
        draw.text((3, y + h // 2 - 12), f"{kind}\nlayers: {layers}", fill="black")
        sheet.paste(source.resize((w, h)), (left, y))
        for j, ratio in enumerate(ratios, 1):
            path = image_path(out_dir, Cell(kind, layers, ratio))
            if path.exists():
                sheet.paste(Image.open(path).convert("RGB").resize((w, h)), (left + j * w, y))
    return sheet


def plot(table: list[dict], path: Path) -> None:
    """Joint rate, target attribute and IoU median against the ratio: a panel per layer set, a line per type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layer_sets = list(dict.fromkeys(e["layers"] for e in table))
    fig, axes = plt.subplots(1, len(layer_sets), figsize=(3.8 * len(layer_sets) + 2.2, 3.4), squeeze=False,
                             sharey=True)
    for ax, layers in zip(axes[0], layer_sets):
        for kind, colour in zip(TYPES, ("tab:red", "tab:blue", "tab:purple")):
            sel = [e for e in table if e["layers"] == layers and e["type"] == kind]
            if sel:
                x = [e["ratio"] for e in sel]
                ax.plot(x, [e["joint"] for e in sel], "-o", color=colour, label=f"{kind}: joint")
                ax.plot(x, [e["attribute"] for e in sel], "--", color=colour, alpha=0.6, label=f"{kind}: attribute")
                ax.plot(x, [e["iou_median"] for e in sel], ":", color=colour, alpha=0.6, label=f"{kind}: IoU median")
        ax.set_title(f"layers {layers}")
        ax.set_xlabel("replace ratio")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("rate (joint, attribute) or IoU median")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def markdown(table: list[dict], objects: bool = False) -> str:
    """Joint rate (IoU median) per cell: a row per (type, layers), a column per ratio; ``objects``: the shape swaps'
    "all four" rate (place kept rate) instead."""
    ratios = sorted({e["ratio"] for e in table})
    lines = ["| type | layers | " + " | ".join(f"r={r:g}" for r in ratios) + " |",
             "|---|---|" + "---|" * len(ratios)]
    for kind, layers in dict.fromkeys((e["type"], e["layers"]) for e in table):
        cells = {e["ratio"]: e for e in table if e["type"] == kind and e["layers"] == layers}
        values = [_cell(cells.get(r), objects) for r in ratios]
        lines.append(f"| {kind} | {layers} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def _cell(entry: dict | None, objects: bool) -> str:
    if entry is None or (objects and entry["object_all_four"] is None):
        return "-"
    if objects:
        return f"{entry['object_all_four']:.0%} ({entry['object_place_ok']:.0%})"
    return f"{entry['joint']:.0%} ({entry['iou_median']:.2f})"


def write_report(out_dir: Path, rows: list[dict], cells: list[Cell], params: dict) -> str:
    """figure.png, and for scored items plot.png and summary.md; run.json with the summary. Of ``rows``, or of every
    shard's rows when the run in ``out_dir`` was sharded (call it once every shard is done:
    ``io.sweep.wait_for_shards``)."""
    from ..io.outputs import write_json, write_text_atomic
    from ..io.runinfo import package_versions

    out_dir = Path(out_dir)
    if is_sharded(out_dir, TABLE):
        rows = all_rows(out_dir, TABLE)
    figure(out_dir, cells).save(out_dir / "figure.png")
    table = summarise(rows)
    text = "Cells as images only (no oracle for this model): see figure.png\n"
    if table:
        plot(table, out_dir / "plot.png")
        text = (f"Joint rate \"target attribute AND IoU >= 0.8\" (IoU median) over {table[0]['n']} edits per cell; "
                f"'both' adds P2P's cross replacement at 0:{BOTH_CROSS:g}.\n\n" + markdown(table))
        if any(e["object_all_four"] is not None for e in table):
            text += (f"\nObject swaps ({table[0]['object_n']} shape swaps per cell): \"all four\" (target shape, "
                     "place, size and colour kept) and, in brackets, place kept.\n\n" + markdown(table, objects=True))
    write_text_atomic(out_dir / "summary.md", text)
    write_json(out_dir / "run.json", {"params": params, "summary": table, "versions": package_versions()})
    return text
