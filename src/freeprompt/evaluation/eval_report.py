"""The report of ``freeprompt eval`` and ``freeprompt score``: the paper-style table (method x dataset: CLIP score,
CLIP directional similarity), the PIE-Bench-style table (structure, background preservation, CLIP of the whole and
of the edited region), the shapes oracle's table, how far CDS agrees with the oracle, a panel per metric with 95 %
intervals (``metrics.png``), the examples sheet (``examples.png``), run.json. Every header says which protocol
computed the numbers and where the background metrics were taken (outside the edit mask, outside the object, the
whole image)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io import sweep
from ..io.outputs import write_json, write_text_atomic

# (column, label, scale, a background metric) of the PIE-Bench-style table: the scales PIE-Bench prints
PIE_COLUMNS = [("structure_distance", "structure x10^3", 1e3, False), ("psnr_outside", "PSNR (dB)", 1, True),
               ("lpips_outside", "LPIPS x10^3", 1e3, True), ("mse_outside", "MSE x10^4", 1e4, True),
               ("ssim_outside", "SSIM x10^2", 1e2, True), ("clip_score", "CLIP whole", 1, False),
               ("clip_edited", "CLIP edited", 1, False)]
REGIONS = {"mask": "outside the edit mask", "object": "outside the object", "whole": "whole image"}
PROTOCOL_TEXT = {
    "pie-bench": "pie-bench (PIE-Bench's released evaluation, quirks included: PSNR, MSE and SSIM with the edited "
                 "region set to 0 in both images and averaged over all pixels; LPIPS with SqueezeNet and the edited "
                 "region black; the structure distance's ViT fed 0-255 values)",
    "clean": "clean (PSNR, MSE and SSIM averaged over the kept pixels only; LPIPS with AlexNet and the edited region "
             "grey; the structure distance's ViT fed 0-1 values)"}
SKIPPED_SHOWN = 20  # skipped rows listed in summary.md (run.json holds them all)


def all_rows(out_dir: Path) -> list[dict]:
    """Every shard's rows."""
    return sweep.all_rows(out_dir, "items.csv")


def values(rows: list[dict], column: str) -> np.ndarray:
    out = []
    for r in rows:
        try:
            v = float(r.get(column, "nan"))
        except (TypeError, ValueError):
            v = float("nan")
        if math.isfinite(v):
            out.append(v)
    return np.array(out)


def mean_ci(x: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its normal 95 % interval (nan for no data)."""
    if len(x) == 0:
        return float("nan"), float("nan")
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else float("nan")
    return float(x.mean()), float(half)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); nan for fewer than 3 pairs or a constant side."""
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")

    def ranks(x):
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):
            r[x == v] = r[x == v].mean()
        return r

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def paper_table(rows: list[dict], dataset: str) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = [f"| method | {dataset}: CS | {dataset}: CDS | n |", "|---|---|---|---|"]
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        cs, cds = mean_ci(values(sel, "clip_score")), mean_ci(values(sel, "clip_directional"))
        lines.append(f"| {m} | {_fmt(cs)} | {_fmt(cds, 3)} | {len(sel)} |")
    return "\n".join(lines) + "\n"


def column_label(label: str, background: bool, region: str) -> str:
    """A background metric's label says where it was computed: ``PSNR (dB), whole image``."""
    return f"{label}, {REGIONS[region]}" if background else label


def pie_table(rows: list[dict], region: str = "mask") -> str:
    present = [c for c in PIE_COLUMNS if len(values(rows, c[0]))]
    head = [column_label(label, bg, region) for _, label, _, bg in present]
    lines = ["| method | " + " | ".join(head) + " | n |", "|---|" + "---|" * (len(present) + 1)]
    for m in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == m]
        cells = [f"{values(sel, c).mean() * s:.2f}" if len(values(sel, c)) else "-" for c, _, s, _ in present]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {len(sel)} |")
    return "\n".join(lines) + "\n"


def correlation_text(a: np.ndarray, b: np.ndarray, verdict: str = "joint") -> str:
    """Spearman's rho to two decimals, or why there is none: "n/a (all edits succeeded)" for a constant verdict."""
    if len(a) < 3:
        return f"n/a ({len(a)} edit{'s' if len(a) != 1 else ''})"
    if np.ptp(b) == 0:
        if verdict == "joint":
            return "n/a (all edits succeeded)" if b[0] else "n/a (no edit succeeded)"
        return f"n/a ({verdict} constant)"
    if np.ptp(a) == 0:
        return "n/a (CDS constant)"
    return f"{spearman(a, b):.2f}"


def oracle_table(rows: list[dict]) -> str:
    lines = ["| method | target attribute | IoU median | joint | CDS vs joint (Spearman) | CDS vs IoU (Spearman) |",
             "|---|---|---|---|---|---|"]
    for m in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == m and r.get("iou") not in (None, "")]
        if not sel:
            continue
        joint = np.array([str(r["joint"]) == "True" for r in sel], float)
        attribute = np.array([str(r["attribute_ok"]) == "True" for r in sel], float)
        iou = np.array([float(r["iou"]) for r in sel])
        cds = np.array([float(r.get("clip_directional") or "nan") for r in sel])
        ok = np.isfinite(cds)
        lines.append(f"| {m} | {attribute.mean():.0%} | {np.median(iou):.2f} | {joint.mean():.0%} | "
                     f"{correlation_text(cds[ok], joint[ok])} | {correlation_text(cds[ok], iou[ok], 'IoU')} |")
    return "\n".join(lines) + "\n"


def rate_interval(hits: int, n: int) -> tuple[float, float, float]:
    """A rate with its Wilson 95 % interval (low, high), which stays inside [0, 1] at 0 % and 100 %."""
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    z, p = 1.96, hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def panel_stats(rows: list[dict], column: str, methods: list[str], scale: float) -> list[tuple[float, float, float]]:
    """(mean, low, high) of ``column`` per method, scaled: a normal 95 % interval, a Wilson one for the oracle's
    joint rate (``joint``, in %)."""
    out = []
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        if column == "joint":
            flags = [str(r["joint"]) == "True" for r in sel if r.get("joint") not in (None, "")]
            stat = rate_interval(sum(flags), len(flags))
        else:
            mean, half = mean_ci(values(sel, column))
            half = 0.0 if math.isnan(half) else half
            stat = (mean, mean - half, mean + half)
        out.append(tuple(v * scale for v in stat))
    return out


def plot_columns(rows: list[dict], region: str) -> list[tuple[str, str, float]]:
    """(column, title, scale) of every metric present: the PIE-Bench-style columns, CDS, the oracle's joint rate."""
    columns = [(c, column_label(label, bg, region).replace(", ", "\n"), s) for c, label, s, bg in PIE_COLUMNS]
    columns += [("clip_directional", "CDS", 1), ("joint", "oracle joint success (%)", 100)]
    return [c for c in columns if c[0] == "joint" and any(r.get("joint") not in (None, "") for r in rows)
            or c[0] != "joint" and len(values(rows, c[0]))]


def bars(rows: list[dict], path: Path, region: str = "mask", title: str = "") -> bool:
    """A panel per metric present: per method its mean (a dot, the value printed beside it) and 95 % interval (a
    whisker), on the scale its title names; an axis that does not start at 0 says so. False when there is nothing
    to draw."""
    columns = plot_columns(rows, region)
    if not columns:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    across = min(len(columns), 4)
    down = math.ceil(len(columns) / across)
    fig, axes = plt.subplots(down, across, figsize=(2.7 * across + 0.4, 3.1 * down + 0.4), squeeze=False)
    for ax, (column, label, scale) in zip(axes.flat, columns):
        _panel(ax, panel_stats(rows, column, methods, scale), methods, label)
    for ax in list(axes.flat)[len(columns):]:
        ax.set_visible(False)
    fig.suptitle(title or "mean and 95 % interval per method", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _panel(ax, stats, methods: list[str], label: str) -> None:
    colours = [f"C{i % 10}" for i in range(len(methods))]
    for i, ((mean, low, high), colour) in enumerate(zip(stats, colours)):
        if not math.isnan(mean):
            ax.errorbar([i], [mean], yerr=[[max(0.0, mean - low)], [max(0.0, high - mean)]], fmt="o", color=colour,
                        capsize=4)
            ax.annotate(_short_number(mean), (i, mean), xytext=(5, 0), textcoords="offset points", fontsize=6,
                        va="center")
    finite = [v for s in stats for v in s if math.isfinite(v)]
    zoomed = False
    if finite:
        low, high = min(finite), max(finite)
        pad = 0.15 * (high - low) or 0.05 * abs(high) or 0.5
        zoomed = 0 < high - low < 0.25 * high and low > 0  # differences small beside the values: zoom in
        ax.set_ylim(low - pad if zoomed or low < 0 else 0, high + pad)
    ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=7)
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(label + ("\n(axis not from 0)" if zoomed else ""), fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _short_number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"


def example_sheet(files: list[Path], path: Path, per_line: int = 1) -> bool:
    """The example grids (each its own size: a longer label makes a taller band) laid out ``per_line`` to a line,
    each line as tall as its tallest grid and each column as wide as its widest, so rows and columns align; False
    when there are none."""
    from PIL import Image

    from ..io.outputs import replacing

    if not files:
        return False
    grids = [Image.open(f).convert("RGB") for f in files]
    lines = [grids[i:i + per_line] for i in range(0, len(grids), per_line)]
    widths = [max(line[j].width for line in lines if j < len(line)) for j in range(per_line)]
    heights = [max(g.height for g in line) for line in lines]
    sheet = Image.new("RGB", (sum(widths), sum(heights)), "white")
    for n, line in enumerate(lines):
        for j, grid in enumerate(line):
            sheet.paste(grid, (sum(widths[:j]), sum(heights[:n])))
    with replacing(path) as tmp:
        sheet.save(tmp, format="PNG")
    return True


def examples_of(out_dir: Path, methods: list[str]) -> list[Path]:
    """``examples/<case>.<method>.png`` by case, then in the run's method order."""
    order = {m: i for i, m in enumerate(methods)}
    found = []
    for path in (Path(out_dir) / "examples").glob("*.png"):
        case, _, method = path.stem.rpartition(".")
        if method in order:
            found.append(((case, order[method]), path))
    return [path for _, path in sorted(found)]


def setup_lines(protocol: str | None, region: str, scored_at: str) -> list[str]:
    """What the numbers mean: the protocol, where the background metrics are computed, the images' size."""
    lines = [f"Protocol: {PROTOCOL_TEXT.get(protocol, protocol or 'not recorded')}.\n"] if protocol else []
    where = {"mask": "outside each item's edit mask",
             "object": "outside the object (the rendered object's mask, or the shapes oracle's object in the source "
                       "grown by one pixel)",
             "whole": "over the whole image (this set has no edit masks)"}[region]
    return lines + [f"Background metrics (PSNR, MSE, SSIM, LPIPS): {where}. Images scored {scored_at}.\n"]


def write_report(out_dir: Path, dataset: str, params: dict, skipped: list[str], notes: list[str], *,
                 region: str = "whole", scored_at: str = "at the model's size", what: str = "edited targets",
                 missing: list[str] | None = None) -> str:
    """summary.md (the setup, the paper's table, the PIE-Bench-style table, the oracle's table), metrics.png,
    examples.png and run.json of every shard's rows; ``missing``: edited images that could not be scored."""
    out_dir = Path(out_dir)
    rows, protocol = all_rows(out_dir), params.get("protocol")
    named = f"{protocol} protocol" if protocol else "no protocol recorded"
    methods = list(dict.fromkeys(r["method"] for r in rows))
    missing = missing or []
    parts = [f"# Evaluation: {dataset}\n", f"{len(rows)} {what}; {len(skipped)} dataset rows skipped"
             + (f" (e.g. {skipped[0]})" if skipped else "") + (f"; {len(missing)} edited images missing or "
                                                                 "unreadable" if missing else "") + ".\n"]
    parts += setup_lines(protocol, region, scored_at)
    parts += [f"Note: {note}\n" for note in notes]
    parts += ["## CLIP score and CLIP directional similarity (the paper's table; mean +- 95 % interval)\n",
              paper_table(rows, dataset),
              f"## PIE-Bench-style table ({named}; background metrics {REGIONS[region]})\n",
              pie_table(rows, region)]
    if any(r.get("iou") not in (None, "") for r in rows):
        parts += ["## The shapes oracle, and how far CDS agrees with it\n", oracle_table(rows)]
    title = f"{dataset}, {named}: mean and 95 % interval per method"
    if bars(rows, out_dir / "metrics.png", region, title):
        parts.append("![metrics](metrics.png)\n")
    if example_sheet(examples_of(out_dir, methods), out_dir / "examples.png"):
        parts.append("![examples](examples.png)\n")
    parts += skipped_section(missing, title="Edited images missing or unreadable") + skipped_section(skipped)
    text = "\n".join(parts)
    write_text_atomic(out_dir / "summary.md", text)
    write_json(out_dir / "run.json", {"params": params, "rows": len(rows), "skipped": skipped, "missing": missing,
                                      "notes": notes})
    return text


def skipped_section(skipped: list[str], shown: int = SKIPPED_SHOWN, title: str = "Dataset rows skipped") -> list[str]:
    """The dataset rows skipped before the run (unusable images, masks, prompts), each with its reason."""
    if not skipped:
        return []
    more = len(skipped) - shown
    lines = [f"- {reason}" for reason in skipped[:shown]]
    lines += [f"- and {more} more (run.json lists every one)"] if more > 0 else []
    return [f"## {title} ({len(skipped)})\n", "\n".join(lines) + "\n"]


def skipped_line(skipped: list[str], first: int = 3) -> str:
    """One line for the end of a run: how many dataset rows were skipped, and the first reasons."""
    reasons = "; ".join(skipped[:first]) + ("; ..." if len(skipped) > first else "")
    return f"skipped {len(skipped)} dataset row{'s' if len(skipped) != 1 else ''}: first reasons: {reasons}"


def _fmt(stat: tuple[float, float], digits: int = 2) -> str:
    mean, half = stat
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if math.isnan(half) else f" +- {half:.{digits}f}")
