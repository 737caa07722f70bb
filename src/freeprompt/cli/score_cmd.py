"""``freeprompt score``: score edits made by any tool with ``eval``'s metrics and tables; resumable and shardable."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .eval_cmd import DATASET_HELP, check_protocol, protocol_option, wanted_metrics
from .options import device_option, limit_option, num_shards_option, quiet_option, seed_option, shard_index_option
from .progress import progress_bar

EDITS_HELP = ("a tool's edits: DIR or NAME=DIR (NAME: its method column [default: the folder's name]); repeat for "
              "each tool. PIE-Bench: DIR/annotation_images/<image_path>; other sets: DIR/<case>/target_<k>.png (k "
              "from 1; generated sets also DIR/<case>/source.png), or --mapping")


def score(
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    edits: list[str] = typer.Option(..., "--edits", "-e", help=EDITS_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="results folder (resumes an earlier run with the same settings)"),
    data: Optional[Path] = typer.Option(None, help="the dataset's file (as for eval)"),
    images: Optional[Path] = typer.Option(None, help="folder of the dataset's photos (as for eval)"),
    mapping: Optional[Path] = typer.Option(None, help="CSV with the header case,target,edit naming each edited "
                                           "image inside an --edits folder (target: k from 1; 0: the source image)"),
    protocol: Optional[str] = protocol_option(),
    metrics: Optional[str] = typer.Option(None, help="comma-separated: clip, cds, clip_edited, structure, psnr, mse, "
                                          "ssim, lpips, oracle [default: all that can run]"),
    clip: Optional[str] = typer.Option(None, help="CLIP for CS/CDS: a hub id or path, or 'shapes' [default: shapes "
                                       "for the shapes sets, else openai/clip-vit-large-patch14]"),
    dino: str = typer.Option("facebook/dino-vitb8", help="DINO ViT for the structure distance"),
    limit: Optional[int] = limit_option("at most this many sources", high=10**7),
    seed: int = seed_option(0, "the dataset's first seed (the shapes sets' renders depend on it)"),
    num_shards: Optional[int] = num_shards_option(),
    shard_index: Optional[int] = shard_index_option(),
    device: str = device_option(),
    quiet: bool = quiet_option(),
):
    """Score edited images made by any editor with eval's metrics (CLIP score, directional similarity, structure,
    background metrics, the shapes oracle); writes items.csv, summary.md, metrics.png. Missing or unreadable edited
    images are skipped and counted."""
    from ..errors import BadInput
    from ..evaluation import edit_sets, eval_report, runner
    from ..evaluation import score as sc
    from ..io.outputs import check_output_folder
    from ..io.sweep import distributed_position
    from ..models.loading import process_device, resolve_device

    check_output_folder(out, resumable=True)
    chosen = sc.parse_edits(edits)
    wanted = wanted_metrics(metrics)
    check_protocol(protocol)
    table = sc.read_mapping(mapping)
    shards, index = distributed_position(num_shards, shard_index)
    cases = edit_sets.load(dataset, data, images, limit, seed)
    protocol = protocol or runner.default_protocol(cases)
    root = images or (Path(data).parent / "annotation_images" if data else None)
    found, missing = sc.find(cases, chosen, table, root)
    if not found:
        first = missing[0] if missing else "no edits"
        raise BadInput(f"no edited image of {dataset} found in the --edits folders ({len(missing)} missing or "
                          f"unreadable; {first})", "lay them out as --help says, or give --mapping")
    from .eval_cmd import scorers_for

    resolved = str(resolve_device(process_device(device)))
    scorers = scorers_for(wanted, clip or ("shapes" if dataset.startswith("shapes") else None), dino, resolved,
                          cases, protocol)
    settings = {"command": "score", "dataset": dataset, "data": str(data) if data else None,
                "edits": {e.name: str(e.root) for e in chosen}, "mapping": str(mapping) if mapping else None,
                "metrics": list(scorers.metrics), "cases": len(cases.cases), "seed": seed, "protocol": protocol,
                "clip": clip, "dino": dino}
    sc.run_score(found, cases, out, settings, scorers, num_shards=shards, shard_index=index,
                 progress=progress_bar("scored", "source", quiet))
    if index == 0:
        runner.wait_for_shards(out, shards)
        scored_at = runner.scored_at(cases, protocol, "the edits' own size")
        typer.echo(eval_report.write_report(out, dataset, settings, cases.skipped, scorers.notes,
                                            region=runner.region_kind(cases), scored_at=scored_at,
                                            what="scored edits", missing=missing))
        if missing:
            typer.echo(eval_report.skipped_line(missing).replace("dataset row", "edited image", 1))
