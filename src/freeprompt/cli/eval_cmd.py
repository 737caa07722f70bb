"""``freeprompt eval``: every method over an edit dataset, scored; resumable and shardable."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .loading import load_model
from .options import (
    device_option,
    dtype_option,
    guidance_option,
    limit_option,
    model_option,
    num_shards_option,
    offload_option,
    quiet_option,
    seed_option,
    shard_index_option,
    steps_option,
)
from .progress import progress_bar

DATASET_HELP = ("car-fake-edit, car-real-edit, imagenet-fake-edit, imagenet-real-edit (the paper's), pie-bench, "
                "custom, shapes-fake-edit, shapes-real-edit")
PROTOCOL_HELP = ("pie-bench: PIE-Bench's released evaluation exactly (zero-filled averages, SqueezeNet LPIPS, 0-255 "
                 "structure input, the dataset's own photo size); clean: kept-pixel averages, AlexNet LPIPS, 0-1 "
                 "structure input, the model's size [default: pie-bench for PIE-Bench and sets with edit masks, "
                 "else clean]")


def protocol_option():
    return typer.Option(None, "--protocol", help=PROTOCOL_HELP)


def evaluate(
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="results folder (resumes an earlier run with the same settings)"),
    model: str = model_option(),
    data: Optional[Path] = typer.Option(None, help="the dataset's file (the paper's JSON, PIE-Bench's "
                                        "mapping_file.json, or your JSON/CSV)"),
    images: Optional[Path] = typer.Option(None, help="folder of the real images, by the names in the file"),
    inversion: str = typer.Option("direct", help="for real images: direct, ddim, null-text or negative-prompt"),
    metrics: Optional[str] = typer.Option(None, help="comma-separated: clip, cds, clip_edited, structure, psnr, mse, "
                                          "ssim, lpips, oracle [default: all that can run]"),
    clip: Optional[str] = typer.Option(None, help="CLIP for CS/CDS: a hub id or path, or 'shapes' [default: shapes "
                                       "on the shapes fixture, else openai/clip-vit-large-patch14]"),
    dino: str = typer.Option("facebook/dino-vitb8", help="DINO ViT for the structure distance"),
    protocol: Optional[str] = protocol_option(),
    save_edits: bool = typer.Option(False, "--save-edits", help="keep every edit in edits/<method>/<case>/ "
                                    "(target_<k>.png, source.png), for 'freeprompt score' to score again"),
    limit: Optional[int] = limit_option("at most this many sources (quick runs)", high=10**7),
    steps: Optional[int] = steps_option(),
    guidance: Optional[float] = guidance_option(),
    seed: int = seed_option(0, "first seed (every source gets its own)"),
    num_shards: Optional[int] = num_shards_option(),
    shard_index: Optional[int] = shard_index_option(),
    device: str = device_option(),
    dtype: str = dtype_option(),
    offload: str = offload_option(),
    quiet: bool = quiet_option(),
    method: str = "fpe",
    method_options: Optional[dict] = None,
):
    """Run editing methods over an edit dataset and score every edit (CLIP score, directional similarity, structure
    and background metrics, the shapes oracle); writes items.csv, summary.md, metrics.png, examples/."""
    from ..editing.methods import build_methods

    chosen = build_methods(method, method_options)
    from ..editing.cache import InversionCache
    from ..editing.inversion import check_inversion
    from ..evaluation import edit_sets, eval_report, runner
    from ..io.outputs import check_output_folder
    from ..io.sweep import distributed_position
    from ..models.loading import check_model_options, process_device
    from ..models.names import FIXTURES

    check_output_folder(out, resumable=True)
    check_inversion(inversion)
    check_model_options(device, dtype, offload)
    wanted = wanted_metrics(metrics)
    check_protocol(protocol)
    shards, index = distributed_position(num_shards, shard_index)
    cases = edit_sets.load(dataset, data, images, limit, seed)
    protocol = protocol or runner.default_protocol(cases)
    runner.adopt_legacy(out, {"protocol": protocol}, cases)  # before the model loads: a refusal costs nothing
    loaded = load_model(model, device=process_device(device), dtype=dtype, offload=offload)
    steps, guidance = loaded.setting("steps", steps, 50), loaded.setting("guidance", guidance, 7.5)
    scorers = scorers_for(wanted, clip or ("shapes" if model in FIXTURES else None), dino, loaded.info["device"],
                          cases, protocol)
    settings = {"dataset": dataset, "data": str(data) if data else None, "model": model, "steps": steps,
                "guidance": guidance, "inversion": inversion, "methods": {n: m.options() for n, m in chosen.items()},
                "metrics": list(scorers.metrics), "cases": len(cases.cases), "seed": seed, "protocol": protocol}
    runner.run_eval(loaded.pipe, cases, chosen, out, settings, scorers, steps=steps, guidance=guidance,
                    inversion=inversion, cache=InversionCache() if cases.real else None,
                    model_key=loaded.key, num_shards=shards,
                    shard_index=index, progress=progress_bar("edits", "source", quiet), save_edits=save_edits)
    if index == 0:
        runner.wait_for_shards(out, shards)
        scored_at = runner.scored_at(cases, protocol, "the model's size")
        typer.echo(eval_report.write_report(out, dataset, {**settings, "model": loaded.info}, cases.skipped,
                                            scorers.notes, region=runner.region_kind(cases), scored_at=scored_at))
        if cases.skipped:
            typer.echo(eval_report.skipped_line(cases.skipped))


def check_protocol(protocol: Optional[str]) -> None:
    """An unknown --protocol is refused before anything loads (no torch: the names are listed here)."""
    from ..errors import BadInput

    if protocol is not None and protocol not in ("pie-bench", "clean"):
        raise BadInput(f"unknown protocol {protocol!r}", "use --protocol pie-bench or --protocol clean")


def wanted_metrics(metrics: Optional[str]):
    """The metrics asked for by --metrics (None: every one that can run); given but empty is refused."""
    if metrics is None:
        return None
    from ..errors import BadInput
    from ..evaluation import runner

    names = [name.strip() for name in metrics.split(",") if name.strip()]
    if not names:
        raise BadInput("--metrics is empty", f"give some of {', '.join(runner.METRICS)}, or leave it out for all")
    return runner.check_metrics(names)


def scorers_for(wanted, clip_name, dino, device, cases, protocol: str = "clean"):
    """The metric models: explicitly asked-for metrics must load; by default, what cannot load is left out with a
    one-line note (LPIPS: which weights are missing)."""
    from ..errors import FreepromptError, ModelLoadError
    from ..evaluation import metrics as mt
    from ..evaluation import runner

    names = list(wanted or runner.METRICS)
    notes, clip, structure = [], None, None
    if not any(c.mask is not None for c in cases.cases) and "clip_edited" in names and not wanted:
        names.remove("clip_edited")
    if not any("color" in c.extra for c in cases.cases) and "oracle" in names:
        names.remove("oracle")
    for metric, build in (("clip", lambda: mt.ClipScorer(clip_name or mt.DEFAULT_CLIP, device=device)),
                          ("structure", lambda: mt.StructureDistance(dino, device=device))):
        needed = [n for n in names if n == metric or (metric == "clip" and n in ("cds", "clip_edited"))]
        if not needed:
            continue
        try:
            model = build()
        except FreepromptError as err:
            if wanted:
                raise
            notes.append(f"{', '.join(needed)} left out: {err.problem}")
            names = [n for n in names if n not in needed]
            continue
        clip, structure = (model, structure) if metric == "clip" else (clip, model)
    missing = mt.lpips_note(protocol) if "lpips" in names else None
    if missing and wanted:
        raise ModelLoadError(missing.replace("LPIPS left out:", "LPIPS cannot run:", 1),
                             "or leave lpips out of --metrics")
    if missing:
        notes.append(missing)
        names.remove("lpips")
    return runner.Scorers(tuple(names), clip, structure, notes, protocol)
