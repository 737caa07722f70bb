"""Reports of probing results in the paper's format: rows = classes (plus an ``Avg.`` row: the layer's overall
test accuracy), columns = ``Layer 1`` .. ``Layer N`` and ``Avg.`` (the row's mean over the single layers), plus
``All`` when the all-layers probe ran. Values are test accuracies as fractions with two decimals, as the paper
prints them; where the paper printed the same table (``paper.paper_table``) the report adds its rows beside ours
with the difference.

Files per experiment and probe: ``<experiment>.<probe>.csv`` and ``.md`` (the table), ``.png`` (a heatmap of
the same table); ``mean_maps.<dataset>.<word>.png`` (mean map per class and layer; ``<dataset>.png`` for self
maps); ``report.md`` gathers every table with its protocol and hyper-parameters. matplotlib is imported only
when a PNG is drawn (Agg backend).
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import torch

from ..errors import BadInput
from ..io.outputs import json_check, write_json
from .paper import comparison_rows, paper_table

PROBE_TITLES = {"authors": "authors' classifier", "linear": "linear probe",
                "authors_shuffled": "authors' classifier on shuffled labels (chance control)"}


def accuracy_table(result: dict, probe: str = "authors") -> tuple[list[str], list[list]]:
    """(header, rows) with accuracies as fractions (floats; NaN where a class had no test item)."""
    if probe not in result["results"]:
        raise BadInput(f"result {result.get('experiment')!r} has no probe {probe!r}",
                       f"use one of {', '.join(result['results'])}")
    per_layer = result["results"][probe]
    layer_keys = [str(row["index"]) for row in result["layers"] if str(row["index"]) in per_layer]
    has_all = "all" in per_layer
    header = ["Class"] + [f"Layer {k}" for k in layer_keys] + ["Avg."] + (["All"] if has_all else [])
    rows = []

    def row_of(name, values, all_value):
        finite = [v for v in values if not math.isnan(v)]
        avg = sum(finite) / len(finite) if finite else float("nan")
        return [name] + values + [avg] + ([all_value] if has_all else [])

    for cls in result["classes"]:
        values = [per_layer[k]["per_class"].get(cls, float("nan")) for k in layer_keys]
        all_value = per_layer["all"]["per_class"].get(cls, float("nan")) if has_all else None
        rows.append(row_of(cls, values, all_value))
    values = [per_layer[k]["accuracy"] for k in layer_keys]
    rows.append(row_of("Avg.", values, per_layer["all"]["accuracy"] if has_all else None))
    return header, rows


def _fmt(v) -> str:
    if isinstance(v, str):
        return v
    return "-" if v is None or math.isnan(v) else f"{v:.2f}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in rows:
        cells = [_fmt(v) for v in row]
        if row[0] == "Avg.":
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def slug(text: str) -> str:
    """``text`` as a safe file-name stem."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "experiment"


def describe(result: dict) -> str:
    cfg = result["config"]
    test = result.get("test")
    words = f"word {result['train']['word']!r}"
    if test and test["word"] != result["train"]["word"]:
        words += f" -> {test['word']!r}"
    return (f"{result['kind']}-attention maps, {words}; {result['protocol']}. Hyper-parameters: Adam lr {cfg['lr']}, "
            f"weight decay {cfg['weight_decay']}, {cfg['epochs']} epochs, batch {cfg['batch_size']}, dropout "
            f"{cfg['dropout']}, hidden max(in//{cfg['hidden_div']}, {cfg['hidden_min']})"
            + (f" capped at {cfg['hidden_cap']}" if cfg.get("hidden_cap") else "")
            + f", standardised inputs: {cfg['standardize']}, at most {cfg['max_features']} features per layer, "
            f"seed {cfg['seed']}.")


def write_table(result: dict, out: str | Path, probe: str = "authors", heatmap_png: bool = True) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header, rows = accuracy_table(result, probe)
    stem = f"{slug(result['experiment'])}.{probe}"
    paths = {"csv": out / f"{stem}.csv", "md": out / f"{stem}.md"}
    write_csv(paths["csv"], header, rows)
    table = f" (the paper's Table {result['table']})" if result.get("table") else ""
    title = f"### {result['experiment']}{table} — {PROBE_TITLES.get(probe, probe)}\n\n"
    text = (title + describe(result) + " Test accuracy (fraction of test items).\n\n"
            + markdown_table(header, rows) + "\n")
    paper = paper_table(result) if probe == "authors" else None
    if paper:
        paths["paper_csv"] = out / f"{stem}.paper.csv"
        columns = header[:header.index("Avg.") + 1]  # the paper's columns: class, layers, Avg. (no All)
        compared = comparison_rows(columns, rows, paper[1])
        write_csv(paths["paper_csv"], columns, compared)
        text += (f"\nBeside the paper's {paper[0]} (SD1.x, the paper's vocabulary; difference = ours - paper):\n\n"
                 + markdown_table(columns, compared) + "\n")
    paths["md"].write_text(text)
    if heatmap_png:
        paths["png"] = out / f"{stem}.png"
        heatmap(header, rows, paths["png"], f"{result['experiment']}: {PROBE_TITLES.get(probe, probe)}")
    return paths


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([row[0]] + ["" if v is None or math.isnan(v) else f"{v:.2f}" for v in row[1:]])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def heatmap(header: list[str], rows: list[list], path: str | Path, title: str = "") -> Path:
    plt = _pyplot()
    data = torch.tensor([[float("nan") if v is None else v for v in row[1:]] for row in rows]).numpy()
    fig, ax = plt.subplots(figsize=(0.62 * len(header) + 2.0, 0.42 * len(rows) + 1.6))
    im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(header) - 1), [h.replace("Layer ", "L") for h in header[1:]], fontsize=8)
    ax.set_yticks(range(len(rows)), [row[0] for row in rows], fontsize=8)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if not math.isnan(data[i, j]):  # the text dark on viridis' light end (above ~0.55), light on its dark end
                ax.text(j, i, f"{data[i, j]:.2f}".removeprefix("0"), ha="center", va="center", fontsize=7,
                        color="black" if data[i, j] > 0.55 else "white")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, label="test accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def mean_maps(dataset, path: str | Path, word: str | None = "target", layers=None,
              max_items: int | None = None) -> Path:
    """A grid of mean maps: one row per class, one column per layer (each cell on its own colour scale)."""
    plt = _pyplot()
    rows = dataset.layers if layers is None else [dataset.layer(i) for i in layers]
    classes = list(dataset.classes)
    y = dataset.y
    fig, axes = plt.subplots(len(classes), len(rows), figsize=(0.9 * len(rows) + 1.2, 0.9 * len(classes) + 0.8),
                             squeeze=False)
    for j, row in enumerate(rows):
        maps = dataset.load(row["name"], word)
        if max_items:
            maps, yy = maps[:max_items], y[:max_items]
        else:
            yy = y
        for i in range(len(classes)):
            ax = axes[i][j]
            sel = maps[yy == i]
            if len(sel):
                ax.imshow(sel.mean(0).numpy(), cmap="magma", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"L{row['index']}", fontsize=7)
            if j == 0:
                ax.set_ylabel(classes[i], fontsize=7)
    what = "self-attention" if dataset.kind == "self" else f"cross-attention of {word!r}"
    fig.suptitle(f"{dataset.name}: mean {what} map per class and layer", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def mean_map_entry(dataset, word: str | None) -> tuple[str, tuple]:
    """``write_report``'s key and value for a dataset's mean maps: a cross-attention dataset's maps of one word
    (``<name>.<word>``), a self-attention dataset's as a whole (``<name>``)."""
    if dataset.kind == "cross":
        return f"{dataset.name}.{word}", (dataset, word)
    return dataset.name, (dataset, None)


def summary_table(results: list[dict]) -> str:
    """One row per experiment: for each probe, the test accuracy averaged over the single layers, of the best
    single layer, and of all layers together (``-`` where that probe did not run)."""
    probes = [p for p in PROBE_TITLES if any(p in r["results"] for r in results)]
    header = ["experiment", "paper's table", "train / test items"] + [f"{p}: mean / best / all" for p in probes]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * len(probes)) + "|"]
    for result in results:
        cells = [result["experiment"], str(result.get("table") or "-"), _sizes(result)]
        for probe in probes:
            cells.append(_mean_best_all(result, probe))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _sizes(result: dict) -> str:
    match = re.search(r"\((\d+) train / (\d+) test\)", result.get("protocol", ""))
    if match:
        return f"{match.group(1)} / {match.group(2)}"
    match = re.search(r"all (\d+) items .* all (\d+) items", result.get("protocol", ""))
    return f"{match.group(1)} / {match.group(2)} (OOD)" if match else "-"


def _mean_best_all(result: dict, probe: str) -> str:
    per_layer = result["results"].get(probe)
    if not per_layer:
        return "-"
    singles = [v["accuracy"] for k, v in per_layer.items() if k != "all" and v.get("accuracy") is not None]
    if not singles:
        return "-"
    whole = per_layer.get("all", {}).get("accuracy")
    return (f"{sum(singles) / len(singles):.2f} / {max(singles):.2f} / "
            + ("-" if whole is None else f"{whole:.2f}"))


def write_report(results: dict | list[dict], out: str | Path, datasets: dict | None = None,
                 probes: tuple[str, ...] | None = None, pngs: bool = True, vocabulary=None) -> Path:
    """Tables (CSV, Markdown, heatmap PNG) for every result and probe, mean-map grids for ``datasets``
    ({name: (dataset, word)}, drawn to ``mean_maps.<name>.png``), and ``report.md`` gathering them; with the
    ``vocabulary`` (a ``words.Vocabulary``), which of its words are the paper's."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = [results] if isinstance(results, dict) else list(results)
    sections = ["# Probing report", ""]
    if vocabulary is not None and vocabulary.printed:
        sections += [f"Vocabulary {vocabulary.name!r}:", ""] + [f"- {line}" for line in vocabulary.provenance()] + [""]
    sections += ["## Summary (test accuracy as a fraction)", "", summary_table(results), ""]
    for result in results:
        for probe in probes or result["probes"]:
            if probe not in result["results"]:
                continue
            paths = write_table(result, out, probe, heatmap_png=pngs)
            sections.append(paths["md"].read_text())
            if "png" in paths:
                sections.append(f"![{result['experiment']} {probe}]({paths['png'].name})\n")
        if result.get("skipped_shards"):
            sections.append("Skipped shards: " + "; ".join(result["skipped_shards"]) + "\n")
    for name, (dataset, word) in (datasets or {}).items():
        if pngs:
            png = out / f"mean_maps.{slug(name)}.png"
            mean_maps(dataset, png, word)
            sections.append(f"### Mean maps: {name}\n\n![mean maps {name}]({png.name})\n")
    report = out / "report.md"
    report.write_text("\n".join(sections))
    return report


def write_result(result: dict, out: str | Path) -> Path:
    """Write one ``run_probes`` result as JSON: ``out`` itself if it ends in .json, else
    ``out/<experiment>.json``; returns the path."""
    out = Path(out)
    path = out if out.suffix == ".json" else out / f"{slug(result['experiment'])}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**result, "check": json_check(result)}, indent=1)
    return path


def load_results(path: str | Path) -> list[dict]:
    """Results written by ``freeprompt probe train`` (one JSON file, or every ``*.json`` result in a folder)."""
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    out = []
    for file in files:
        try:
            data = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise BadInput(f"cannot read probe results {file}: {err}",
                           "give a results file written by 'probe train'") from None
        for item in data if isinstance(data, list) else [data]:
            if isinstance(item, dict) and "results" in item and "classes" in item:
                out.append(checked_result(item, file))
    if not out:
        raise BadInput(f"no probe results in {path}", "give a file or folder written by 'freeprompt probe train'")
    return out


def checked_result(item: dict, file: Path) -> dict:
    """A loaded result whose checksum matches (one written before results had one passes as is)."""
    if "check" not in item:
        return item
    data = {k: v for k, v in item.items() if k != "check"}
    if json_check(data) != item["check"]:
        raise BadInput(f"probe results {file} were changed or damaged after they were written (checksum mismatch)",
                       "train again with 'freeprompt probe train', or delete the file's \"check\" field to use it "
                       "as is")
    return data


__all__ = ["accuracy_table", "checked_result", "heatmap", "load_results", "markdown_table", "mean_maps",
           "summary_table", "write_report", "write_table"]
