"""Photos without a caption (issue #37): why colour edits of a photo inverted with an empty source prompt keep the
object less often than with its caption, and what closes the gap. Photos are the shapes-real-edit set's (rendered
64 px photos of one object, three colour swaps each, ``evaluation.edit_sets.shapes_real_edit``); every edit is
scored against the photo by the oracle (colour reached, IoU with the photo's object, joint = both with IoU >= 0.8,
and the object-swap scores) and the reconstruction PSNR of the inversion is kept beside it.

A variant is how the source prompt is found (the true caption, "", or a caption ranked by the shapes CLIP among
the world's captions), the inversion, the guidance, and the method's options. Each variant writes its own
resumable folder ``OUT/<variant>/``; ``report`` writes ``summary.md``, ``summary.csv`` and ``figure.png``.

Seeds: photo lists 100 and 101 (``--list-seed``) choose the settings; the held-out figures use lists 0, 1 and 2.

    python -m lab.captionless run --list-seed 100 --photos 40 --variants caption,empty,auto \
        --out lab/results/captionless/selection
    python -m lab.captionless report --out lab/results/captionless/selection
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from freeprompt.editing.methods import build_method
from freeprompt.evaluation.edit_sets import shapes_real_edit
from freeprompt.evaluation.shapes_bench import EditItem, score_edit, wilson
from freeprompt.io.sweep import Sweep, Unit, all_rows

SCORES = ["attribute_ok", "iou", "joint", "place_ok", "size_ok", "other_kept", "all_four", "background_psnr"]
FIELDS = ["photo", "variant", "target_index", "caption_used", "caption_ok", "inversion_psnr", "source_prompt",
          "target_prompt"] + SCORES
KEY = ("photo", "variant")
CACHE = Path("/tmp/freeprompt-captionless-cache")  # inversions shared by variants with the same source prompt


@dataclass(frozen=True)
class Variant:
    help: str
    caption: str = "true"  # "true" (the photo's caption), "empty", "auto" (every world caption), "auto-simple"
    inversion: str = "direct"
    guidance: float | None = None  # None: the model's (the U-Net fixture: 3, the MM-DiT fixture: 4)
    method: str = "fpe"
    options: dict = field(default_factory=dict)


def _variants() -> dict[str, Variant]:
    v = {
        "caption": Variant("the photo's true caption, direct inversion, FPE's defaults"),
        "empty": Variant("empty source prompt, direct inversion", "empty"),
        "empty-ddim": Variant("empty source prompt, DDIM inversion", "empty", "ddim"),
        "empty-null-text": Variant("empty source prompt, null-text inversion", "empty", "null-text"),
        "empty-negative-prompt": Variant("empty source prompt, negative-prompt inversion", "empty", "negative-prompt"),
        "empty-g2": Variant("empty source prompt, guidance 2", "empty", guidance=2.0),
        "empty-g5": Variant("empty source prompt, guidance 5", "empty", guidance=5.0),
        "empty-uncond": Variant("empty source prompt, FPE also in the unconditional half", "empty",
                                options={"edit_uncond": True}),
        "empty-0:1": Variant("empty source prompt, FPE steps 0:1", "empty", options={"self_replace": "0:1"}),
        "auto": Variant("caption ranked by the shapes CLIP among every world caption (560)", "auto"),
        "auto-simple": Variant("caption ranked by the shapes CLIP among 'a <colour> <shape>' (80)", "auto-simple"),
        "caption-uncond": Variant("true caption, FPE also in the unconditional half", options={"edit_uncond":
                                                                                               True}),
        "auto-uncond": Variant("CLIP-ranked caption, FPE also in the unconditional half", "auto",
                               options={"edit_uncond": True}),
        "caption-0:1": Variant("true caption, FPE steps 0:1", options={"self_replace": "0:1"}),
        "auto-0:1": Variant("CLIP-ranked caption, FPE steps 0:1", "auto", options={"self_replace": "0:1"}),
        "plain-caption": Variant("true caption, plain regeneration from the inversion", method="plain"),
        "caption-g2": Variant("true caption, guidance 2", guidance=2.0),
        "caption-negative-prompt": Variant("true caption, negative-prompt inversion", inversion="negative-prompt"),
        "auto-negative-prompt": Variant("CLIP-ranked caption, negative-prompt inversion", "auto",
                                        inversion="negative-prompt"),
        "caption-null-text": Variant("true caption, null-text inversion", inversion="null-text"),
        "auto-g2": Variant("CLIP-ranked caption, guidance 2", "auto", guidance=2.0),
        "caption-p2p-0:0.2": Variant("true caption, FPE beside P2P's cross-attention replace 0:0.2", method="fpe+p2p",
                                     options={"cross_replace": "0:0.2"}),
        "auto-p2p-0:0.2": Variant("CLIP-ranked caption, FPE beside P2P's cross-attention replace 0:0.2", "auto",
                                  method="fpe+p2p", options={"cross_replace": "0:0.2"}),
    }
    captions = {"caption": ("true caption", "true"), "empty": ("empty source prompt", "empty"),
                "auto": ("CLIP-ranked caption", "auto")}
    for end in ("0.04", "0.1", "0.2", "0.4"):
        for name, (text, caption) in captions.items():
            v[f"{name}-shared-0:{end}"] = Variant(f"{text}, a shared start 0:{end}", caption,
                                                  options={"shared_start": f"0:{end}"})
    for g in (4.0, 5.0):
        v[f"auto-g{g:.0f}"] = Variant(f"CLIP-ranked caption, guidance {g:.0f}", "auto", guidance=g)
    for end in ("0.6", "0.9", "0.95"):
        v[f"auto-0:{end}"] = Variant(f"CLIP-ranked caption, FPE steps 0:{end}", "auto",
                                     options={"self_replace": f"0:{end}"})
    v["auto-0:0.9-shared-0:0.2"] = Variant("CLIP-ranked caption, a shared start 0:0.2, FPE steps 0:0.9", "auto",
                                           options={"shared_start": "0:0.2", "self_replace": "0:0.9"})
    v["auto-shared-0:0.2-fpe-0:1"] = Variant("CLIP-ranked caption, a shared start 0:0.2, FPE steps 0:1", "auto",
                                             options={"shared_start": "0:0.2", "self_replace": "0:1"})
    return v


VARIANTS = _variants()


def _ranker():
    from freeprompt.editing.caption import CaptionRanker

    if not hasattr(_ranker, "made"):
        _ranker.made = CaptionRanker()
    return _ranker.made


def caption_for(variant: Variant, case, photo) -> str:
    from freeprompt.editing.caption import shapes_candidates

    if variant.caption == "true":
        return case.source
    if variant.caption == "empty":
        return ""
    candidates = shapes_candidates()
    if variant.caption == "auto-simple":
        candidates = [c for c in candidates if len(c.split()) == 3 and not c.startswith(("a big", "a small"))]
    return _ranker().rank(photo, candidates).text


def run_variant(pipe, name: str, cases, out: Path, steps: int, guidance: float, model: str = "shapes") -> list[dict]:
    """Every photo's colour edits by variant ``name`` (``guidance`` where the variant names none), resumable in
    ``out/name``."""
    from PIL import Image

    from freeprompt.editing.cache import InversionCache
    from freeprompt.editing.images import prepare_image
    from freeprompt.editing.real import edit_real

    variant = VARIANTS[name]
    method = build_method(variant.method, variant.options)
    cache = InversionCache(CACHE)
    guidance = variant.guidance if variant.guidance is not None else guidance
    settings = {"model": model, "steps": steps, "variant": name, "caption": variant.caption,
                "inversion": variant.inversion, "guidance": guidance, "method": method.options(),
                "photos": [[c.id, c.source, *c.targets] for c in cases]}

    def work(unit: Unit) -> list[dict]:
        case = unit.data
        photo = prepare_image(Image.fromarray(case.extra["render"]), (64, 64), "crop")
        caption = caption_for(variant, case, photo)
        result = edit_real(pipe, photo, caption, case.targets, method=method, inversion=variant.inversion,
                           steps=steps, guidance=guidance, cache=cache, model_key=model, progress=False)
        words = caption.split()
        rows = []
        for i, (target, image) in enumerate(zip(case.targets, result.targets)):
            item = EditItem(f"{case.id}-{i}", "color", case.seed, case.extra["color"], case.extra["shape"],
                            target.split()[1], case.extra["shape"])
            scores = score_edit(np.asarray(photo.convert("RGB")), np.asarray(image.convert("RGB")), item)
            rows.append({"photo": case.id, "variant": name, "target_index": i, "caption_used": caption,
                         "caption_ok": case.extra["color"] in words and case.extra["shape"] in words,
                         "inversion_psnr": result.params["inversion_psnr"], "source_prompt": case.source,
                         "target_prompt": target, **{k: scores[k] for k in SCORES}})
        return rows

    units = [Unit((c.id, name), rows=len(c.targets), index=n, data=c) for n, c in enumerate(cases)]
    sweep = Sweep(Path(out) / name, settings, FIELDS, KEY, "edits.csv")
    return sweep.run(units, work, lambda done, total: print(f"{name}: {done}/{total}", flush=True))


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        sel = [r for r in rows if r["variant"] == variant]
        n, photos = len(sel), {r["photo"]: r for r in sel}
        hits = sum(str(r["joint"]) == "True" for r in sel)
        low, high = wilson(hits, n)
        psnrs = [float(r["inversion_psnr"]) for r in photos.values() if r["inversion_psnr"] not in ("", "None")]
        table.append({"variant": variant, "n": n, "photos": len(photos),
                      "attribute": np.mean([str(r["attribute_ok"]) == "True" for r in sel]),
                      "iou_median": float(np.median([float(r["iou"]) for r in sel])),
                      "joint": hits / n, "low": low, "high": high,
                      "all_four": np.mean([str(r["all_four"]) == "True" for r in sel]),
                      "caption_ok": np.mean([str(r["caption_ok"]) == "True" for r in photos.values()]),
                      "psnr_median": float(np.median(psnrs)) if psnrs else math.nan})
    return table


def markdown(table: list[dict]) -> str:
    lines = ["| variant | edits (photos) | colour reached | IoU median | joint [95 % CI] | object kept (all four) | "
             "caption names colour and shape | reconstruction PSNR median (dB) | what it does |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        help_text = VARIANTS[e["variant"]].help if e["variant"] in VARIANTS else ""
        lines.append(f"| `{e['variant']}` | {e['n']} ({e['photos']}) | {e['attribute']:.0%} | {e['iou_median']:.2f} | "
                     f"**{e['joint']:.0%}** [{e['low']:.0%}-{e['high']:.0%}] | {e['all_four']:.0%} | "
                     f"{e['caption_ok']:.0%} | {e['psnr_median']:.1f} | {help_text} |")
    return "\n".join(lines) + "\n"


def figure(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(table) + 1.2))
    y = np.arange(len(table))
    joint = np.array([e["joint"] for e in table])
    err = np.array([[e["joint"] - e["low"] for e in table], [e["high"] - e["joint"] for e in table]])
    ax.barh(y, joint, xerr=err, color="tab:blue", alpha=0.75, capsize=2)
    ax.set_yticks(y, [e["variant"] for e in table], fontsize=8)
    ax.axvline(0.9, color="grey", ls=":", lw=1)
    ax.set_xlim(0, 1)
    ax.set_xlabel("joint success: colour reached AND IoU >= 0.8 (95 % interval)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(out: Path, pooled: tuple[Path, ...] = ()) -> str:
    """``summary.md``, ``summary.csv`` and ``figure.png`` in ``out`` of every variant's edits in ``out`` and in the
    ``pooled`` run folders (other photo lists), a variant's rows of every folder pooled."""
    from freeprompt.io.outputs import write_text_atomic
    from freeprompt.io.tables import write_rows

    Path(out).mkdir(parents=True, exist_ok=True)
    runs = (Path(out), *map(Path, pooled))
    rows = [{**row, "photo": f"{n}:{row['photo']}"} for n, run in enumerate(runs)  # a photo id per list
            for folder in sorted(run.iterdir()) if folder.is_dir() for row in all_rows(folder, "edits.csv")]
    table = summarise(rows)
    text = markdown(table)
    write_text_atomic(Path(out) / "summary.md", text)
    if table:
        write_rows(Path(out) / "summary.csv", table, list(table[0]))
        figure(table, Path(out) / "figure.png")
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="edit the photos with each variant (resumes)")
    run.add_argument("--variants", required=True, help=f"comma-separated: {', '.join(VARIANTS)}")
    run.add_argument("--list-seed", type=int, default=100)
    run.add_argument("--photos", type=int, default=40)
    run.add_argument("--model", choices=("shapes", "shapes-mmdit"), default="shapes")
    run.add_argument("--steps", type=int, help="default: the model's (the U-Net fixture: 50, the MM-DiT: 28)")
    run.add_argument("--guidance", type=float, help="where a variant names none; default: the model's")
    run.add_argument("--out", type=Path, required=True)
    rep = sub.add_parser("report", help="summary.md, summary.csv and figure.png of every variant in OUT")
    rep.add_argument("--out", type=Path, required=True)
    rep.add_argument("--pool", type=Path, nargs="*", default=(), help="run folders whose edits are pooled with OUT's")
    sub.add_parser("list", help="the variants")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, variant in VARIANTS.items():
            print(f"{name:24} {variant.help}")
        return
    if args.command == "report":
        print(report(args.out, tuple(args.pool)))
        return
    from freeprompt.models.loading import load_pipeline

    loaded = load_pipeline(args.model, device="cpu")
    steps, guidance = loaded.setting("steps", args.steps, 50), loaded.setting("guidance", args.guidance, 3.0)
    cases = shapes_real_edit(args.photos, args.list_seed).cases
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; see python -m lab.captionless list")
        run_variant(loaded.pipe, name, cases, args.out, steps, guidance, args.model)


if __name__ == "__main__":
    main()
