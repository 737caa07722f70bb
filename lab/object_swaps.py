"""Object swaps on the shapes fixture (issue #37): what moves the object when FPE swaps it ("a red circle" -> "a red
square"), and which lever keeps it in place, scored by the oracle's four object-swap scores (target shape reached,
place kept, size kept, colour kept; ``evaluation.shapes_bench.score_edit``).

Every variant edits the same sources from the same noise. A source is (colour, shape, noise seed), drawn from an
item-list seed (``--list-seed``); one edit call takes all 7 other shapes as targets (object swaps) or all 9 other
colours (colour swaps), which batches them (about 2.8x faster than one target per call, the same images to one
grey level). Each variant writes its own resumable folder ``OUT/<kind>/<variant>/`` (``io.sweep``); ``report``
reads every folder of OUT and writes ``summary.md``, ``summary.csv`` and ``figure.png``.

Seeds: list seed 100 (selection) and 200 (confirmation) choose the settings; the held-out figures are the shapes
benchmark's own lists (``freeprompt bench shapes --seed 0/1/2``), never used here. ``--model shapes-mmdit`` asks the
same of the MM-DiT fixture (its own 28 flow steps and guidance 4 unless given); ``--model FOLDER`` of a candidate
fixture (a training run's output) before it is shipped.

    python -m lab.object_swaps run --kind shape --list-seed 100 --sources 20 --variants fpe,fpe-uncond \
        --out lab/results/object_swaps/selection
    python -m lab.object_swaps report --out lab/results/object_swaps/selection
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from freeprompt.attention.layers import LayerSpec
from freeprompt.attention.rules import Rule
from freeprompt.attention.steps import StepRange
from freeprompt.editing.methods import P2P, Combined, MasaCtrl, MethodContext, MethodPlan, build_method
from freeprompt.evaluation.shapes_bench import EditItem, score_edit, wilson
from freeprompt.io.sweep import Sweep, Unit, all_rows
from freeprompt.models.names import FIXTURES
from freeprompt.shapes import world

SCORES = ["attribute_ok", "place_ok", "size_ok", "other_kept", "all_four", "joint", "iou", "place_px", "centroid_px",
          "size_ratio", "background_psnr", "target_shape_read"]
FIELDS = ["source", "variant", "kind", "seed", "source_prompt", "target_prompt"] + SCORES
KEY = ("source", "variant")


# ---------------------------------------------------------------- sources and swaps

@dataclass(frozen=True)
class Source:
    id: str
    seed: int
    color: str
    shape: str

    @property
    def prompt(self) -> str:
        return world.caption("simple", self.color, self.shape)


def sources(list_seed: int, count: int) -> list[Source]:
    """``count`` seeded sources: a colour, a shape and a noise seed each."""
    rng = np.random.default_rng(list_seed)
    found = []
    for i in range(count):
        color = list(world.COLORS)[rng.integers(len(world.COLORS))]
        shape = world.SHAPES[rng.integers(len(world.SHAPES))]
        found.append(Source(f"L{list_seed}-{i:03d}", int(rng.integers(2**31 - 1)), color, shape))
    return found


def swaps(source: Source, kind: str) -> list[EditItem]:
    """Every object swap (7 other shapes) or every colour swap (9 other colours) of ``source``."""
    if kind == "shape":
        return [EditItem(f"{source.id}-{s}", "shape", source.seed, source.color, source.shape, source.color, s)
                for s in world.SHAPES if s != source.shape]
    return [EditItem(f"{source.id}-{c}", "color", source.seed, source.color, source.shape, c, source.shape)
            for c in world.COLORS if c != source.color]


# ---------------------------------------------------------------- variants

@dataclass(frozen=True)
class Mix:
    """A self-attention edit of the study that the package does not ship: in ``layers`` and ``steps`` every target
    row of ``halves`` attends with the queries, keys and values picked ("own" or "source")."""

    steps: str = "0:0.8"
    layers: str = "all"
    queries: str = "source"
    keys: str = "source"
    values: str = "own"
    halves: tuple = ("cond",)
    name: str = "mix"

    def plan(self, ctx: MethodContext) -> MethodPlan:
        mix = ctx.layout.mix(queries=self.queries, keys=self.keys, values=self.values, halves=self.halves)
        layers = ctx.layers(LayerSpec.parse(self.layers), "self")
        return MethodPlan(rules=[Rule("self", layers, StepRange.parse(self.steps), mix, self.name)])

    def options(self) -> dict:
        return {"steps": self.steps, "layers": self.layers, "queries": self.queries, "keys": self.keys,
                "values": self.values, "halves": list(self.halves)}


@dataclass(frozen=True)
class Variant:
    help: str
    method: str = "fpe"  # a --method value, built with build_method(method, options)
    options: dict = field(default_factory=dict)
    extra: tuple = ()  # further methods run beside it (Combined): Mix or package methods
    blend: bool = False  # P2P's local blend of the swapped words (one word per prompt of the batch, source first)

    def build(self, items: list[EditItem]):
        options = dict(self.options)
        if self.blend:
            words = [(i.src_shape, i.tgt_shape) if i.kind == "shape" else (i.src_color, i.tgt_color) for i in items]
            options["blend"] = (words[0][0], *[w[1] for w in words])
        built = build_method(self.method, options)
        return Combined((built, *self.extra)) if self.extra else built


def _groups() -> dict[str, str]:
    """The fixture's self-attention layers by grid (64 px: latents 16x16)."""
    return {"16x16": "1,2,14-16", "8x8": "3,4,11-13", "4x4": "5,6,8-10", "2x2": "7"}


def _variants() -> dict[str, Variant]:
    v = {
        "plain": Variant("no edit: the target generated from the same noise", "plain"),
        "fpe": Variant("FPE's defaults: self-attention maps, steps 0:0.8, conditional half"),
        "p2p": Variant("P2P's defaults (cross-attention maps 0:0.8, self maps 0:0.4 in small layers)", "p2p"),
        "masactrl": Variant("MasaCtrl's defaults", "masactrl"),
        "pnp": Variant("PnP's defaults", "pnp"),
        "fpe+p2p": Variant("FPE beside P2P's word-swap replace (the new word takes the old word's map)", "fpe+p2p"),
        "fpe+p2p-refine": Variant("FPE beside P2P refine: the source's cross-attention maps for the words the prompts "
                                  "share, the new word its own", "fpe+p2p", {"p2p_mode": "refine"}),
        "fpe-uncond": Variant("FPE, also in the unconditional half", options={"edit_uncond": True}),
        "fpe-image": Variant("FPE, on an MM-DiT the image-to-image block only (--fpe-joint image)",
                             options={"fpe_joint": "image"}),
        "fpe-image-uncond": Variant("FPE, the image-to-image block only, in both halves",
                                    options={"fpe_joint": "image", "edit_uncond": True}),
        "fpe-keys": Variant("source keys only: SDPA(Q_tgt, K_src, V_tgt), steps 0:0.8", "plain",
                            extra=(Mix(queries="own"),)),
        "fpe-queries": Variant("source queries only: SDPA(Q_src, K_tgt, V_tgt), steps 0:0.8", "plain",
                               extra=(Mix(keys="own"),)),
        "fpe-blend": Variant("FPE with P2P's local blend of the two swapped words (steps 0.2:1)", "fpe+p2p",
                             {"cross_replace": "0:0"}, blend=True),
        "fpe+masactrl-late": Variant("FPE 0:0.5, then MasaCtrl's key/value sharing 0.5:1 in every layer",
                                     options={"self_replace": "0:0.5"},
                                     extra=(MasaCtrl(steps="0.5:1", layers="all"),)),
    }
    for end in ("0.2", "0.3", "0.4", "0.5", "0.6", "0.9", "1"):
        v[f"fpe-0:{end}"] = Variant(f"FPE, steps 0:{end}", options={"self_replace": f"0:{end}"})
        v[f"fpe-uncond-0:{end}"] = Variant(f"FPE in both halves, steps 0:{end}",
                                           options={"self_replace": f"0:{end}", "edit_uncond": True})
    for end in ("0.1", "0.2", "0.3", "0.4", "0.6"):
        v[f"fpe+p2p-0:{end}"] = Variant(f"FPE beside P2P's word-swap replace of the cross-attention maps, "
                                        f"steps 0:{end}",
                                        "fpe+p2p", {"cross_replace": f"0:{end}"})
        v[f"fpe+p2p-refine-0:{end}"] = Variant(f"FPE beside P2P refine (shared words' maps), steps 0:{end}", "fpe+p2p",
                                               {"cross_replace": f"0:{end}", "p2p_mode": "refine"})
    for label, layers in (("coarse", "5-10"), ("mid", "3-13")):
        v[f"fpe+p2p-{label}"] = Variant(f"FPE beside P2P's word-swap replace 0:0.8 in the cross-attention layers "
                                        f"{layers} "
                                        f"({'4x4 and 2x2' if label == 'coarse' else '8x8 and below'})", "fpe+p2p",
                                        {"cross_layers": layers})
    for end in ("0.04", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6"):
        v[f"fpe-shared-0:{end}"] = Variant(f"FPE, the targets starting from the source's latents after steps 0:{end}",
                                           options={"shared_start": f"0:{end}"})
        v[f"plain-shared-0:{end}"] = Variant(f"no edit but a shared start: steps 0:{end}",
                                             options={"self_replace": "0:0", "shared_start": f"0:{end}"})
    for end in ("0.04", "0.1", "0.2", "0.3"):  # an object swap on the MM-DiT: FPE's 0:0.4, and a shared start before it
        v[f"fpe-0:0.4-shared-0:{end}"] = Variant(f"FPE, steps 0:0.4, and a shared start 0:{end}",
                                                 options={"self_replace": "0:0.4", "shared_start": f"0:{end}"})
    blocks = (("1-4", "1-4"), ("5-8", "5-8"), ("3-6", "3-6"), ("ends", "1,2,7,8"))  # the MM-DiT fixture's 8 blocks
    for label, layers in blocks:
        v[f"fpe-0:0.4-shared-0:0.2-layers-{label}"] = Variant(
            f"FPE, steps 0:0.4 in blocks {layers}, and a shared start 0:0.2",
            options={"self_replace": "0:0.4", "shared_start": "0:0.2", "layers": layers})
    for end in ("0.3", "0.5", "0.6"):
        v[f"fpe-0:{end}-shared-0:0.2"] = Variant(f"FPE, steps 0:{end}, and a shared start 0:0.2",
                                                 options={"self_replace": f"0:{end}", "shared_start": "0:0.2"})
    v["fpe-image-0:0.4-shared-0:0.2"] = Variant("FPE's image-to-image reading, steps 0:0.4, and a shared start 0:0.2",
                                                options={"fpe_joint": "image", "self_replace": "0:0.4",
                                                         "shared_start": "0:0.2"})
    p2p_self = P2P().options()["self_replace"]  # P2P's own default, which its defaults beside FPE turn off
    for end in ("0.04", "0.1", "0.2"):  # P2P's defaults (FPE's maps off) with a shared start before them
        v[f"p2p-shared-0:{end}"] = Variant(f"P2P's defaults and a shared start 0:{end}", "fpe+p2p",
                                           {"self_replace": "0:0", "shared_start": f"0:{end}",
                                            "p2p_self_replace": p2p_self})
    v["fpe-shared-0:0.06"] = Variant("FPE, the targets starting from the source's latents after steps 0:0.06",
                                     options={"shared_start": "0:0.06"})
    v["fpe+p2p-0:0.2-shared-0:0.04"] = Variant("FPE beside P2P's word-swap replace 0:0.2, and a shared start 0:0.04",
                                               "fpe+p2p", {"cross_replace": "0:0.2", "shared_start": "0:0.04"})
    v["fpe+p2p+masactrl-late"] = Variant("FPE 0:0.5 beside P2P's word-swap replace 0:0.5, then MasaCtrl 0.5:1 in every "
                                         "layer", "fpe+p2p", {"self_replace": "0:0.5", "cross_replace": "0:0.5"},
                                         extra=(MasaCtrl(steps="0.5:1", layers="all"),))
    for start in ("0.1", "0.2", "0.4"):
        v[f"fpe-{start}:0.8"] = Variant(f"FPE, steps {start}:0.8", options={"self_replace": f"{start}:0.8"})
    for grid, layers in _groups().items():
        v[f"fpe-only-{grid}"] = Variant(f"FPE in the {grid} layers only ({layers})", options={"layers": layers})
        rest = ",".join(g for k, g in _groups().items() if k != grid)
        v[f"fpe-without-{grid}"] = Variant(f"FPE in every layer but the {grid} ones ({rest})", options={"layers": rest})
    return v


VARIANTS = _variants()


# ---------------------------------------------------------------- running

def run_variant(pipe, name: str, kind: str, chosen: list[Source], out: Path, steps: int, guidance: float,
                model: str = "shapes") -> list[dict]:
    """Every source's swaps edited by variant ``name`` (one call per source, every swap a target of it), resumable in
    ``out/kind/name``."""
    from freeprompt.editing.generated import edit

    variant = VARIANTS[name]
    settings = {"model": model, "steps": steps, "guidance": guidance, "kind": kind, "variant": name,
                "method": _recorded(variant.build(swaps(chosen[0], kind))),
                "sources": [[s.id, s.seed, s.prompt] for s in chosen]}

    def work(unit: Unit) -> list[dict]:
        source = unit.data
        items = swaps(source, kind)
        result = edit(pipe, source.prompt, [i.target_prompt for i in items], method=variant.build(items),
                      seed=source.seed, steps=steps, guidance=guidance, progress=False)
        images = [np.asarray(img.convert("RGB")) for img in result.images]
        rows = []
        for item, image in zip(items, images[1:]):
            scores = score_edit(images[0], image, item)
            rows.append({"source": source.id, "variant": name, "kind": kind, "seed": source.seed,
                         "source_prompt": source.prompt, "target_prompt": item.target_prompt,
                         **{k: scores[k] for k in SCORES}})
        return rows

    units = [Unit((s.id, name), rows=len(swaps(s, kind)), index=n, data=s) for n, s in enumerate(chosen)]
    sweep = Sweep(Path(out) / kind / _folder(name), settings, FIELDS, KEY, "swaps.csv")
    return sweep.run(units, work, lambda done, total: print(f"{kind} {name}: {done}/{total}", flush=True))


def _recorded(method) -> dict:
    return {"name": method.name, "options": method.options()}


def _folder(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-.+" else "_" for ch in name)


# ---------------------------------------------------------------- report

def _true(rows, key) -> int:
    return sum(str(r[key]) == "True" for r in rows)


def summarise(rows: list[dict]) -> list[dict]:
    """Per (kind, variant): n, the rate of every score with its Wilson interval for the headline, medians."""
    table = []
    for kind, variant in dict.fromkeys((r["kind"], r["variant"]) for r in rows):
        sel = [r for r in rows if r["kind"] == kind and r["variant"] == variant]
        n = len(sel)
        headline = "all_four" if kind == "shape" else "joint"
        low, high = wilson(_true(sel, headline), n)
        place = [float(r["place_px"]) for r in sel if r["place_px"] not in ("", "nan")]
        table.append({"kind": kind, "variant": variant, "n": n, "sources": len({r["source"] for r in sel}),
                      **{k: _true(sel, k) / n for k in ("attribute_ok", "place_ok", "size_ok", "other_kept",
                                                        "all_four", "joint")},
                      "headline": headline, "low": low, "high": high,
                      "place_px_median": float(np.median(place)) if place else math.nan,
                      "iou_median": float(np.median([float(r["iou"]) for r in sel]))})
    return table


def markdown(table: list[dict]) -> str:
    lines = ["| kind | variant | n (sources) | attribute reached | place kept | size kept | other attribute kept | "
             "all four [95 % CI] | joint (IoU>=0.8) | place px median | IoU median | what it does |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        four = f"**{e['all_four']:.0%}** [{e['low']:.0%}-{e['high']:.0%}]" if e["headline"] == "all_four" else \
            f"{e['all_four']:.0%}"
        joint = f"**{e['joint']:.0%}** [{e['low']:.0%}-{e['high']:.0%}]" if e["headline"] == "joint" else \
            f"{e['joint']:.0%}"
        help_text = VARIANTS[e["variant"]].help if e["variant"] in VARIANTS else ""
        lines.append(f"| {e['kind']} | `{e['variant']}` | {e['n']} ({e['sources']}) | {e['attribute_ok']:.0%} | "
                     f"{e['place_ok']:.0%} | {e['size_ok']:.0%} | {e['other_kept']:.0%} | {four} | {joint} | "
                     f"{e['place_px_median']:.1f} | {e['iou_median']:.2f} | {help_text} |")
    return "\n".join(lines) + "\n"


def figure(table: list[dict], path: Path) -> None:
    """Object swaps' "all four" against colour swaps' joint rate, one point per variant, with 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = {e["variant"]: e for e in table if e["kind"] == "shape"}
    color = {e["variant"]: e for e in table if e["kind"] == "color"}
    both = [v for v in shape if v in color]
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for v in both:
        s, c = shape[v], color[v]
        ax.errorbar(c["joint"], s["all_four"], xerr=[[c["joint"] - c["low"]], [c["high"] - c["joint"]]],
                    yerr=[[s["all_four"] - s["low"]], [s["high"] - s["all_four"]]], fmt="o", capsize=2, alpha=0.8)
        ax.annotate(v, (c["joint"], s["all_four"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0.8, color="grey", ls=":", lw=1)
    ax.axvline(0.95, color="grey", ls=":", lw=1)
    ax.set_xlabel("colour swaps: joint (colour reached AND IoU >= 0.8)")
    ax.set_ylabel("object swaps: all four (shape, place, size, colour)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(out: Path) -> str:
    from freeprompt.io.outputs import write_text_atomic
    from freeprompt.io.tables import write_rows

    rows = [row for folder in sorted(Path(out).glob("*/*")) if folder.is_dir()
            for row in all_rows(folder, "swaps.csv")]
    table = summarise(rows)
    text = markdown(table)
    write_text_atomic(Path(out) / "summary.md", text)
    write_rows(Path(out) / "summary.csv", table, list(table[0]) if table else [])
    if table:
        figure(table, Path(out) / "figure.png")
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="edit the sources with each variant (resumes)")
    run.add_argument("--variants", required=True, help=f"comma-separated: {', '.join(VARIANTS)}")
    run.add_argument("--kind", choices=("shape", "color"), default="shape")
    run.add_argument("--list-seed", default="100", help="item-list seed(s), comma-separated (held out: 0,1,2)")
    run.add_argument("--sources", type=int, default=20, help="sources per list seed")
    run.add_argument("--first", type=int, default=0, help="skip the first sources of the list")
    run.add_argument("--model", default="shapes",
                     help="shapes, shapes-mmdit or the folder of a candidate fixture")
    run.add_argument("--steps", type=int, help="default: the model's (the U-Net fixture: 50)")
    run.add_argument("--guidance", type=float, help="default: the model's (the U-Net fixture: 3)")
    run.add_argument("--out", type=Path, required=True)
    rep = sub.add_parser("report", help="summary.md, summary.csv and figure.png of every variant in OUT")
    rep.add_argument("--out", type=Path, required=True)
    sub.add_parser("list", help="the variants")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, variant in VARIANTS.items():
            print(f"{name:24} {variant.help}")
        return
    if args.command == "report":
        print(report(args.out))
        return
    from freeprompt.models.loading import load_pipeline

    loaded = load_pipeline(args.model, device="cpu")
    steps, guidance = loaded.setting("steps", args.steps, 50), loaded.setting("guidance", args.guidance, 3.0)
    seeds = [int(seed) for seed in args.list_seed.split(",")]
    chosen = [s for seed in seeds for s in sources(seed, args.first + args.sources)[args.first:]]
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; see python -m lab.object_swaps list")
        run_variant(loaded.pipe, name, args.kind, chosen, args.out, steps, guidance, _model_key(args.model, loaded))


def _model_key(model: str, loaded) -> str:
    """What a run's settings record of its model: the bundled fixture's name, or a folder's path with its revision (a
    folder retrained in place does not resume the old run)."""
    return model if model in FIXTURES else f"{model} ({loaded.info['revision']})"


if __name__ == "__main__":
    main()
