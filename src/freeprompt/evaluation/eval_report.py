"""The report of ``freeprompt eval``: the paper-style table (method x dataset: CLIP score, CLIP directional
similarity), the PIE-Bench-style table (structure, background preservation, CLIP of the whole and of the edited
region), the shapes oracle's table, how far CDS agrees with the oracle, bars with 95 % intervals, run.json."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io import sweep
from ..io.outputs import write_json, write_text_atomic

# (column, label, scale) of the PIE-Bench-style table: the scales PIE-Bench prints
PIE_COLUMNS = [("structure_distance", "structure x10^3", 1e3), ("psnr_outside", "PSNR", 1),
               ("lpips_outside", "LPIPS x10^3", 1e3), ("mse_outside", "MSE x10^4", 1e4),
               ("ssim_outside", "SSIM x10^2", 1e2), ("clip_score", "CLIP whole", 1), ("clip_edited", "CLIP edited", 1)]
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


def pie_table(rows: list[dict]) -> str:
    present = [c for c in PIE_COLUMNS if len(values(rows, c[0]))]
    lines = ["| method | " + " | ".join(label for _, label, _ in present) + " |", "|---|" + "---|" * len(present)]
    for m in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == m]
        cells = [f"{values(sel, c).mean() * s:.2f}" if len(values(sel, c)) else "-" for c, _, s in present]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
                     f"{spearman(cds[ok], joint[ok]):.2f} | {spearman(cds[ok], iou[ok]):.2f} |")
    return "\n".join(lines) + "\n"


def bars(rows: list[dict], path: Path) -> bool:
    """Per-method bars with 95 % intervals for every metric present; False when there is nothing to draw."""
    columns = [(c, label) for c, label, _ in PIE_COLUMNS + [("clip_directional", "CDS", 1)] if len(values(rows, c))]
    if not columns:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, len(columns), figsize=(2.6 * len(columns), 3), squeeze=False)
    for ax, (column, label) in zip(axes[0], columns):
        stats = [mean_ci(values([r for r in rows if r["method"] == m], column)) for m in methods]
        ax.bar(range(len(methods)), [s[0] for s in stats], yerr=[s[1] for s in stats], capsize=3, color="tab:blue")
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=7)
        ax.set_title(label, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(out_dir: Path, dataset: str, params: dict, skipped: list[str], notes: list[str]) -> str:
    out_dir = Path(out_dir)
    rows = all_rows(out_dir)
    parts = [f"# Evaluation: {dataset}\n", f"{len(rows)} edited targets; {len(skipped)} dataset rows skipped"
             + (f" (e.g. {skipped[0]})" if skipped else "") + ".\n"]
    parts += [f"Note: {note}\n" for note in notes]
    parts += ["## CLIP score and CLIP directional similarity (the paper's table; mean +- 95 % interval)\n",
              paper_table(rows, dataset), "## PIE-Bench-style table (background metrics outside the edit mask)\n",
              pie_table(rows)]
    if any(r.get("iou") not in (None, "") for r in rows):
        parts += ["## The shapes oracle, and how far CDS agrees with it\n", oracle_table(rows)]
    if bars(rows, out_dir / "metrics.png"):
        parts.append("![metrics](metrics.png)\n")
    parts += skipped_section(skipped)
    text = "\n".join(parts)
    write_text_atomic(out_dir / "summary.md", text)
    write_json(out_dir / "run.json", {"params": params, "rows": len(rows), "skipped": skipped, "notes": notes})
    return text


def skipped_section(skipped: list[str], shown: int = SKIPPED_SHOWN) -> list[str]:
    """The dataset rows skipped before the run (unusable images, masks, prompts), each with its reason."""
    if not skipped:
        return []
    more = len(skipped) - shown
    lines = [f"- {reason}" for reason in skipped[:shown]]
    lines += [f"- and {more} more (run.json lists every one)"] if more > 0 else []
    return [f"## Dataset rows skipped ({len(skipped)})\n", "\n".join(lines) + "\n"]


def skipped_line(skipped: list[str], first: int = 3) -> str:
    """One line for the end of a run: how many dataset rows were skipped, and the first reasons."""
    reasons = "; ".join(skipped[:first]) + ("; ..." if len(skipped) > first else "")
    return f"skipped {len(skipped)} dataset row{'s' if len(skipped) != 1 else ''}: first reasons: {reasons}"


def _fmt(stat: tuple[float, float], digits: int = 2) -> str:
    mean, half = stat
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if math.isnan(half) else f" +- {half:.{digits}f}")
