"""``freeprompt score``: the metrics and tables of ``freeprompt eval`` for edits made by any tool.

Each ``--edits`` folder holds one tool's (one method's) edits of a dataset, laid out by the dataset's own paths:

- PIE-Bench: ``<folder>/annotation_images/<image_path>`` (or ``<folder>/<image_path>``), as PIE-Bench's own
  evaluation reads its editors' outputs; any of ``IMAGE_SUFFIXES`` in place of the photo's;
- every other set: ``<folder>/<case>/target_<k>.png`` (k from 1 in the case's target order, as ``freeprompt edit``
  and ``freeprompt eval --save-edits`` write them), or the paths a CSV mapping names (``case``, ``target``: k,
  ``edit``: a path inside the folder; target 0 names the source image of a generated case);
- a set whose sources are generated, not photos, needs the tool's source image too: ``<folder>/<case>/source.png``.

An edited image that is missing or cannot be decoded is skipped and counted (its reason in ``summary.md``), never
fatal. Scoring follows the protocol: under ``pie-bench`` a photo's edits are resized to the photo's own size, under
``clean`` the photo is fitted to the edits' size (the model's, for edits of one model).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput, first_line
from ..io.sweep import Shards, Sweep, Unit
from .edit_sets import EditCase, EditSet
from .runner import KEY, TABLE, Scorers, case_photo, fitted_mask, has_photo, score, scoring_view

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")
MIN_SIDE = 16


@dataclass(frozen=True)
class Edits:
    """One tool's edits: ``name`` (the table's method column) and the folder holding them."""

    name: str
    root: Path


@dataclass
class Found:
    """What ``find`` found of one tool's edits of one case: (k, path) of each readable edit, and the source image
    of a generated case."""

    case: EditCase
    edits: Edits
    targets: list[tuple[int, Path]]
    source: Path | None = None


def parse_edits(values: list[str]) -> list[Edits]:
    """``--edits DIR`` (named by the folder) or ``--edits NAME=DIR``; folders that exist, names plain and distinct."""
    fix = "give --edits DIR or --edits NAME=DIR, one per tool"
    out: list[Edits] = []
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not _NAME.fullmatch(name):
            name, folder = Path(value).resolve().name, value
        if not _NAME.fullmatch(name):
            raise BadInput(f"--edits {value!r} gives no plain name (letters, digits, . _ + -)", fix)
        root = Path(folder)
        if not root.is_dir():
            raise BadInput(f"--edits folder {folder} does not exist or is not a folder", fix)
        if any(e.name == name for e in out):
            raise BadInput(f"two --edits folders are named {name!r}", "name them: --edits NAME=DIR")
        out.append(Edits(name, root))
    if not out:
        raise BadInput("no --edits folder given", fix)
    return out


def read_mapping(path: Path | None) -> dict[tuple[str, int], str] | None:
    """A CSV of ``case,target,edit`` rows (target: k from 1) naming each edit's path inside an ``--edits`` folder."""
    if path is None:
        return None
    fix = "write a CSV with the header case,target,edit and a row per edited image"
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows, columns = list(reader), reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise BadInput(f"cannot read the mapping {path} ({first_line(err)})", fix) from None
    missing = [c for c in ("case", "target", "edit") if c not in columns]
    if missing:
        raise BadInput(f"the mapping {path} has no column {' or '.join(missing)}", fix)
    mapping = {}
    for n, row in enumerate(rows, 2):
        try:
            mapping[(row["case"], int(row["target"]))] = row["edit"]
        except (TypeError, ValueError):
            raise BadInput(f"the mapping {path} line {n}: target {row.get('target')!r} is not a whole number",
                           fix) from None
    return mapping


def candidates(dataset: EditSet, case: EditCase, k: int, root: Path, mapping, images_root: Path | None) -> list[Path]:
    """Where the k-th edit (from 1) of ``case`` may be, in order."""
    if mapping is not None:
        name = mapping.get((case.id, k))
        return [root / name] if name else []
    if dataset.name == "pie-bench" and case.image is not None:
        relative = _relative(case.image, images_root)
        return [base / relative.with_suffix(s) for base in (root / "annotation_images", root)
                for s in dict.fromkeys((relative.suffix, *IMAGE_SUFFIXES))]
    return [root / case.id / f"target_{k}{s}" for s in IMAGE_SUFFIXES]


def _relative(image: Path, images_root: Path | None) -> Path:
    try:
        return Path(image).relative_to(images_root) if images_root else Path(Path(image).name)
    except ValueError:
        return Path(Path(image).name)


def readable(path: Path) -> str | None:
    """None for an image that decodes whole (at least ``MIN_SIDE`` pixels a side), else why not."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if min(img.size) < MIN_SIDE:
                return f"{img.width}x{img.height} pixels, under {MIN_SIDE}"
    except Exception as err:  # noqa: BLE001 - whatever a decoder raises on a broken file: this image is skipped
        return f"cannot be decoded ({first_line(err)})"
    return None


def find(dataset: EditSet, edits: list[Edits], mapping=None, images_root: Path | None = None
         ) -> tuple[list[Found], list[str]]:
    """Every readable edit of every case by every tool, and the reasons of those missing or unreadable."""
    found, missing = [], []
    for case in dataset.cases:
        for tool in edits:
            entry = Found(case, tool, [])
            if not has_photo(case):
                entry.source = source_path(case, tool.root, mapping)
                reason = "missing" if entry.source is None else readable(entry.source)
                if reason:
                    shown = entry.source or tool.root / case.id / "source.png"
                    missing.append(f"{tool.name} {case.id}: source image {reason} ({shown}); its "
                                   f"{len(case.targets)} edits not scored")
                    continue
            for k in range(1, len(case.targets) + 1):
                paths = candidates(dataset, case, k, tool.root, mapping, images_root)
                path = next((p for p in paths if p.is_file()), None)
                reason = "missing" if path is None else readable(path)
                if reason:
                    shown = path or (paths[0] if paths else f"(no row for {case.id}, target {k} in the mapping)")
                    missing.append(f"{tool.name} {case.id} target {k}: {reason} ({shown})")
                else:
                    entry.targets.append((k, path))
            if entry.targets:
                found.append(entry)
    return found, missing


def source_path(case: EditCase, root: Path, mapping) -> Path | None:
    """The tool's source image of a generated case: ``<case>/source.png`` (or the mapping's target 0)."""
    if mapping is not None:
        name = mapping.get((case.id, 0))
        paths = [root / name] if name else []
    else:
        paths = [root / case.id / f"source{s}" for s in IMAGE_SUFFIXES]
    return next((p for p in paths if p.is_file()), None)


def score_units(found: list[Found], dataset: EditSet) -> list[Unit]:
    index = {case.id: n for n, case in enumerate(dataset.cases)}
    return [Unit((f.case.id, f.edits.name), rows=len(f.targets), index=index[f.case.id], data=f) for f in found]


def run_score(found: list[Found], dataset: EditSet, out_dir: Path, settings: dict, scorers: Scorers, *,
              num_shards: int = 1, shard_index: int = 0, progress=None) -> list[dict]:
    """Score every found edit (a unit per case and tool, a row per edit), resumable like ``eval``."""
    fields = [f for f in scorers.fields() if f not in ("seconds", "peak_gb")]
    run = Sweep(Path(out_dir), settings, fields, KEY, TABLE, Shards.of(num_shards, shard_index))
    return run.run(score_units(found, dataset), lambda unit: score_found(unit.data, scorers), progress)


def score_found(entry: Found, scorers: Scorers) -> list[dict]:
    """The rows of one tool's edits of one case, the source and mask prepared as the protocol says."""
    from PIL import Image

    case, rows = entry.case, []
    for k, path in entry.targets:
        with Image.open(path) as img:
            edit = img.convert("RGB")
        if has_photo(case):
            source, mask = case_photo(case, edit.size), fitted_mask(case.mask, edit.size)
        else:
            with Image.open(entry.source) as img:
                source = img.convert("RGB")
            edit = edit if edit.size == source.size else edit.resize(source.size, Image.BICUBIC)
            mask = fitted_mask(case.mask, source.size)
        source, mask, (edit,) = scoring_view(case, source, mask, [edit], scorers.protocol)
        target = case.targets[k - 1]
        row = {"case": case.id, "target_index": k - 1, "method": entry.edits.name, "seed": case.seed,
               "source_prompt": case.source, "target_prompt": target}
        row.update(score(scorers, case, source, edit, target, mask, k - 1))
        rows.append(row)
    return rows
