"""How few steps does an attention-replacement edit need, per sampler? (issue #40, item 2)

On the shapes fixture: FPE (its defaults) and plain regeneration on the same colour swaps, for every deterministic
and ancestral scheduler the fixture can use and steps in {4, 6, 8, 12, 16, 25, 50}, scored by the oracle (colour
swap joint success: target colour reached AND mask IoU >= 0.8). Two item lists: ``--list selection`` (item seed 10)
to choose the recommended setting, ``--list held-out`` (item seed 11) for the figures the README quotes.
``--kind shape`` runs object swaps of the held-out item seed instead (folder ``held-out-shape``), scored by the four
object-swap scores (shape reached, place, size, colour kept; ``all_four``), to see whether the few-step setting
chosen on colour swaps keeps objects in place too. Resumable (``io.sweep``): rerun the same command after a kill;
``--num-shards K --shard-index i`` splits a list over K processes.

    python -m lab.steps_study --list selection --out lab/results/steps_study
    python -m lab.steps_study --list held-out --out lab/results/steps_study
    python -m lab.steps_study --list held-out --kind shape --items 20 --out lab/results/steps_study
    python -m lab.steps_study --report lab/results/steps_study      # table.md and steps.<list>.png

LCM and TCD are left out: they are samplers for models distilled to few steps (an LCM or TCD checkpoint or LoRA),
which the fixture is not; ``tests/diffusion/test_schedulers.py`` runs them on a tiny random model.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from freeprompt.editing.generated import edit
from freeprompt.editing.methods import build_method
from freeprompt.evaluation.shapes_bench import edit_items, score_edit, wilson
from freeprompt.io.sweep import Shards, Sweep, Unit, all_rows
from freeprompt.models.loading import load_pipeline

SCHEDULERS = ("ddim", "dpm++2m", "unipc", "euler", "euler-a")
STEPS = (4, 6, 8, 12, 16, 25, 50)
METHODS = ("fpe", "plain")
LISTS = {"selection": 10, "held-out": 11}
FIELDS = ["list", "scheduler", "steps", "method", "item", "seed", "attribute_ok", "iou", "joint"]
OBJECT_SCORES = ["place_ok", "size_ok", "other_kept", "all_four"]
KEY = ("list", "scheduler", "steps", "method", "item")
HEADLINE = {"color": "joint", "shape": "all_four"}  # the rate each kind of swap is judged by


def folder_of(list_name: str, kind: str) -> str:
    return list_name if kind == "color" else f"{list_name}-shape"


def run(list_name: str, kind: str, items: int, out: Path, guidance: float, shards: Shards) -> None:
    pipe = load_pipeline("shapes", device="cpu").pipe
    counts, extra = ((items, 0), []) if kind == "color" else ((0, items), OBJECT_SCORES)
    swaps = edit_items(*counts, LISTS[list_name])
    scores = ["attribute_ok", "iou", "joint"] + extra
    methods = {name: build_method(name) for name in METHODS}
    units = [Unit((list_name, s, str(n), m, item.id), index=i, data=(s, n, m, item))
             for i, (s, n, m, item) in enumerate((s, n, m, item) for s in SCHEDULERS for n in STEPS for m in METHODS
                                                 for item in swaps)]

    def work(unit: Unit) -> list[dict]:
        scheduler, steps, method, item = unit.data
        result = edit(pipe, item.source_prompt, [item.target_prompt], method=methods[method], seed=item.seed,
                      steps=steps, guidance=guidance, scheduler=scheduler, progress=False)
        src, tgt = (np.asarray(image.convert("RGB")) for image in result.images)
        found = score_edit(src, tgt, item)
        return [{"list": list_name, "scheduler": scheduler, "steps": steps, "method": method, "item": item.id,
                 "seed": item.seed, **{k: found[k] for k in scores}}]

    settings = {"list": list_name, "items": items, "guidance": guidance, "schedulers": SCHEDULERS, "steps": STEPS}
    if kind != "color":
        settings["kind"] = kind
    Sweep(out / folder_of(list_name, kind), settings, FIELDS + extra, KEY, shards=shards).run(
        units, work, lambda done, total: print(f"{done}/{total}", flush=True))


def rates(rows: list[dict], score: str = "joint") -> dict:
    """{(scheduler, steps, method): (rate of ``score``, n, low, high)}."""
    cells: dict[tuple, list[bool]] = {}
    for row in rows:
        cells.setdefault((row["scheduler"], int(row["steps"]), row["method"]), []).append(str(row[score]) == "True")
    return {key: (float(np.mean(v)), len(v), *wilson(sum(v), len(v))) for key, v in cells.items()}


def report(out: Path) -> None:
    """table.md (per list and kind: the headline rate by scheduler and steps, FPE and plain; the cheapest setting
    keeping >= 95 % of FPE at 50 DDIM steps, and on the other lists how the one chosen on the selection list's colour
    swaps fares) and a plot per list."""
    lines: list[str] = []
    chosen = None
    for list_name in LISTS:
        for kind in HEADLINE:
            folder = out / folder_of(list_name, kind)
            rows = all_rows(folder, "items.csv") if folder.exists() else []
            if not rows:
                continue
            table = rates(rows, HEADLINE[kind])
            cheapest = cheapest_setting(table)
            chosen = cheapest if chosen is None and list_name == "selection" and kind == "color" else chosen
            lines += _table_lines(table, f"{folder.name}: {HEADLINE[kind]} rate (item seed {LISTS[list_name]}, "
                                         f"{table[('ddim', 50, 'fpe')][1]} {kind} swaps)")
            lines += _verdict(table, cheapest, chosen if list_name != "selection" else None)
            _plot(table, out / f"steps.{folder.name}.png", folder.name, HEADLINE[kind])
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _table_lines(table: dict, title: str) -> list[str]:
    lines = [f"### {title}", "", "| scheduler | method | " + " | ".join(f"{n} steps" for n in STEPS) + " |",
             "|---|---|" + "---|" * len(STEPS)]
    for scheduler in SCHEDULERS:
        for method in METHODS:
            cells = [f"{table[(scheduler, n, method)][0]:.0%}" if (scheduler, n, method) in table else "-"
                     for n in STEPS]
            lines.append(f"| {scheduler} | {method} | " + " | ".join(cells) + " |")
    return lines + [""]


def cheapest_setting(table: dict) -> tuple[str, int] | None:
    """The FPE setting with the fewest steps (then the earlier scheduler) keeping >= 95 % of FPE at 50 DDIM steps."""
    reference = table.get(("ddim", 50, "fpe"), (math.nan,))[0]
    keep = [(s, n) for (s, n, m), v in table.items() if m == "fpe" and v[0] >= 0.95 * reference]
    return min(keep, key=lambda k: (k[1], SCHEDULERS.index(k[0]))) if keep else None


def _verdict(table: dict, cheapest, chosen) -> list[str]:
    reference = table.get(("ddim", 50, "fpe"), (math.nan, 0, math.nan, math.nan))
    lines = [f"FPE at 50 DDIM steps: {reference[0]:.0%} [{reference[2]:.0%}-{reference[3]:.0%}]; cheapest setting "
             f"keeping >= 95 % of it here: " + (f"{cheapest[0]} at {cheapest[1]} steps "
                                                f"({table[(*cheapest, 'fpe')][0]:.0%})" if cheapest else "none")]
    if chosen is not None and (*chosen, "fpe") in table:
        rate, _, low, high = table[(*chosen, "fpe")]
        plain = table.get((*chosen, "plain"), (math.nan,))[0]
        lines.append(f"The setting chosen on the selection list's colour swaps, {chosen[0]} at {chosen[1]} steps "
                     f"({chosen[1]}/50 of the model evaluations): FPE {rate:.0%} [{low:.0%}-{high:.0%}], "
                     f"{rate / reference[0]:.0%} of 50-step DDIM's; plain {plain:.0%}")
    return lines + [""]


def _plot(table: dict, path: Path, list_name: str, score: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for scheduler in SCHEDULERS:
        for method, style in (("fpe", "-o"), ("plain", ":")):
            points = [(n, table[(scheduler, n, method)]) for n in STEPS if (scheduler, n, method) in table]
            if points:
                ax.plot([n for n, _ in points], [v[0] for _, v in points], style, label=f"{scheduler} {method}")
    ax.set_xscale("log")
    ax.set_xticks(STEPS, [str(n) for n in STEPS])
    ax.set_xlabel("denoising steps (model evaluations per prompt and guidance half)")
    ax.set_ylabel({"joint": "colour-swap joint success", "all_four": "object swaps: all four kept"}[score])
    ax.set_title(f"FPE (solid) and plain regeneration (dotted) by sampler: {list_name}")
    ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", choices=list(LISTS), default="selection")
    parser.add_argument("--kind", choices=tuple(HEADLINE), default="color", help="colour swaps or object swaps")
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--num-shards", type=int)
    parser.add_argument("--shard-index", type=int)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path("lab/results/steps_study"))
    parser.add_argument("--report", type=Path, help="write the table and plots of this results folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.report:
        report(args.report)
        return
    run(args.list, args.kind, args.items, args.out, args.guidance, Shards.of(args.num_shards, args.shard_index))


if __name__ == "__main__":
    main()
