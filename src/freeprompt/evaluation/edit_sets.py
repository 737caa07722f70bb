"""Edit datasets for ``freeprompt eval``: a list of cases, each a source (prompt, and for real images an image and
maybe an edit mask) with every target prompt of that source, so all targets of one source are edited in one batch.

- the paper's four sets (Liu et al.): ``car-fake-edit`` (regenerated: "a {colour} car" for every ordered pair of the
  paper's 28 car colours, 756 pairs), and from the released JSON files (``--data FILE``) ``car-real-edit``,
  ``imagenet-fake-edit``, ``imagenet-real-edit`` (field ``soure_prompt``, the authors' spelling; real sets take
  ``--images DIR`` holding the images by the names in the JSON);
- PIE-Bench (``--data mapping_file.json --images annotation_images``): 700 images, the ``[]`` around edited words
  stripped from prompts as its authors do, edit masks decoded from its run-length encoding;
- ``custom``: a JSON list or CSV of rows with ``source``, ``target``, optional ``image`` and ``mask`` (a PNG);
- ``shapes-fake-edit`` (a colour swap for every ordered pair of the fixture's colours, on every shape) and
  ``shapes-real-edit`` (rendered photos with their object masks): offline, scored by the shapes oracle too.

Rows that cannot be used (missing images, malformed rows) are skipped and counted with their reason, never fatal.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInput, first_line
from ..shapes import world

# The paper's 28 car colours (a fact of the paper: the word list of Car-fake-edit).
CAR_COLORS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "black", "white", "gray", "brown", "beige",
              "cyan", "magenta", "teal", "lime", "olive", "navy", "maroon", "silver", "gold", "bronze", "peach",
              "coral", "indigo", "violet", "turquoise", "chocolate")
FPE_SETS = ("car-fake-edit", "car-real-edit", "imagenet-fake-edit", "imagenet-real-edit")
DATASETS = FPE_SETS + ("pie-bench", "custom", "shapes-fake-edit", "shapes-real-edit")
PIE_SIZE = 512


@dataclass
class EditCase:
    id: str
    source: str
    targets: list[str]
    image: Path | None = None  # a real image to invert; None: generated from the seed
    mask: np.ndarray | None = None  # HxW bool at the image's size: the edited region
    seed: int = 0
    extra: dict = field(default_factory=dict)  # e.g. PIE-Bench's edit type, the shapes truth


@dataclass
class EditSet:
    name: str
    cases: list[EditCase]
    skipped: list[str] = field(default_factory=list)  # "row: reason"

    @property
    def real(self) -> bool:
        return any(case.image is not None or "render" in case.extra for case in self.cases)

    @property
    def pairs(self) -> int:
        return sum(len(case.targets) for case in self.cases)


def load(name: str, data: Path | None = None, images: Path | None = None, limit: int | None = None,
         seed: int = 0) -> EditSet:
    """The dataset ``name`` (see ``DATASETS``), at most ``limit`` cases."""
    if name not in DATASETS:
        raise BadInput(f"unknown dataset {name!r}", f"use one of {', '.join(DATASETS)}")
    needs_data = name in FPE_SETS[1:] + ("pie-bench", "custom")
    if needs_data and data is None:
        raise BadInput(f"dataset {name} needs its file",
                       "give --data FILE (e.g. Car_real_edit.json, mapping_file.json)")
    if name == "car-fake-edit":
        dataset = car_fake_edit(seed)
    elif name == "shapes-fake-edit":
        dataset = shapes_fake_edit(seed)
    elif name == "shapes-real-edit":
        dataset = shapes_real_edit(limit or 40, seed)
    elif name == "pie-bench":
        dataset = pie_bench(_read_json(data), _image_root(images, data), seed)
    elif name == "custom":
        dataset = custom(data, images, seed)
    else:
        dataset = fpe_json(name, _read_json(data), images if name.endswith("real-edit") else None, seed)
    dataset.cases = dataset.cases[:limit] if limit else dataset.cases
    if not dataset.cases:
        raise BadInput(f"dataset {name} has no usable case ({len(dataset.skipped)} skipped: "
                       f"{dataset.skipped[0] if dataset.skipped else 'empty'})", "check --data and --images")
    return dataset


def car_fake_edit(seed: int = 0) -> EditSet:
    """Car-fake-edit regenerated: 28 sources "a {colour} car", each with the 27 other colours as targets."""
    cases = [EditCase(f"car-{c}", f"a {c} car", [f"a {t} car" for t in CAR_COLORS if t != c], seed=seed + i)
             for i, c in enumerate(CAR_COLORS)]
    return EditSet("car-fake-edit", cases)


def fpe_json(name: str, rows, images: Path | None, seed: int = 0) -> EditSet:
    """One of the paper's released files: rows of ``soure_prompt``, ``edit_prompt`` (and ``image_name`` for the
    real sets), grouped by source (and image) in file order."""
    real = name.endswith("real-edit")
    if real and images is None:
        raise BadInput(f"{name} edits real images", "give --images DIR holding them by the names in the JSON")
    groups: dict[tuple, EditCase] = {}
    skipped = []
    for n, row in enumerate(rows):
        source, target = row.get("soure_prompt", row.get("source_prompt")), row.get("edit_prompt")
        if not isinstance(source, str) or not isinstance(target, str) or not target.strip():
            skipped.append(f"row {n}: no source or edit prompt")
            continue
        image = None
        if real:
            image = Path(images) / str(row.get("image_name", ""))
            if not image.is_file():
                skipped.append(f"row {n}: image {row.get('image_name')} missing")
                continue
        key = (source, str(image))
        if key not in groups:
            groups[key] = EditCase(f"{len(groups):05d}", source, [], image, seed=seed + len(groups))
        groups[key].targets.append(target)
    return EditSet(name, list(groups.values()), skipped)


def pie_bench(mapping: dict, images: Path, seed: int = 0) -> EditSet:
    """PIE-Bench's ``mapping_file.json``: per id ``image_path``, ``original_prompt``, ``editing_prompt``,
    ``editing_type_id``, ``blended_word`` and the run-length encoded ``mask``."""
    cases, skipped = [], []
    for key, row in mapping.items():
        try:
            image = Path(images) / row["image_path"]
            if not image.is_file():
                raise ValueError(f"image {row['image_path']} missing")
            mask = decode_rle(row.get("mask") or [], (PIE_SIZE, PIE_SIZE))
            cases.append(EditCase(str(key), _strip(row["original_prompt"]), [_strip(row["editing_prompt"])], image,
                                  mask, seed, {"edit_type": str(row.get("editing_type_id", "")),
                                               "blended_word": row.get("blended_word", "")}))
        except (KeyError, TypeError, ValueError) as err:
            skipped.append(f"{key}: {first_line(err)}")
    return EditSet("pie-bench", cases, skipped)


def decode_rle(encoded, shape: tuple[int, int]) -> np.ndarray:
    """PIE-Bench's mask encoding: pairs (start, length) of runs of ones in the row-major flattened mask; the
    one-pixel border is set, as its authors do to absorb annotation errors at the edge."""
    flat = np.zeros(shape[0] * shape[1], bool)
    values = [int(v) for v in encoded]
    for start, length in zip(values[0::2], values[1::2]):
        flat[start:start + length] = True
    mask = flat.reshape(shape)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return mask


def custom(path: Path, images: Path | None, seed: int = 0) -> EditSet:
    """Rows of ``source``, ``target``, optional ``image`` and ``mask`` (paths, relative to ``images`` or the file)."""
    path = Path(path)
    rows = _read_json(path) if path.suffix == ".json" else _read_csv(path)
    if not isinstance(rows, list):
        raise BadInput(f"{path} is not a list of rows", "write a JSON list of {source, target, image?, mask?}")
    root = Path(images) if images else path.parent
    groups: dict[tuple, EditCase] = {}
    skipped = []
    for n, row in enumerate(rows):
        try:
            case = _custom_case(row, root, n)
        except (KeyError, TypeError, ValueError, OSError) as err:
            skipped.append(f"row {n}: {first_line(err)}")
            continue
        key = (case.source, str(case.image))
        if key not in groups:
            groups[key] = EditCase(f"{len(groups):05d}", case.source, [], case.image, case.mask, seed + len(groups))
        groups[key].targets += case.targets
    return EditSet("custom", list(groups.values()), skipped)


def _custom_case(row: dict, root: Path, n: int) -> EditCase:
    source, target = row["source"], row["target"]
    if not isinstance(source, str) or not isinstance(target, str) or not target.strip():
        raise ValueError("source and target must be text")
    image = mask = None
    if row.get("image"):
        image = root / row["image"]
        if not image.is_file():
            raise ValueError(f"image {row['image']} missing")
    if row.get("mask"):
        from PIL import Image

        mask = np.asarray(Image.open(root / row["mask"]).convert("L")) > 127
    return EditCase(str(n), source, [target], image, mask)


def shapes_fake_edit(seed: int = 0) -> EditSet:
    """A colour swap for every ordered pair of the fixture's colours, on every shape: 8 shapes x 10 sources x 9
    targets."""
    cases = []
    for shape in world.SHAPES:
        for c in world.COLORS:
            targets = [world.caption("simple", t, shape) for t in world.COLORS if t != c]
            cases.append(EditCase(f"{shape}-{c}", world.caption("simple", c, shape), targets, seed=seed + len(cases),
                                  extra={"color": c, "shape": shape}))
    return EditSet("shapes-fake-edit", cases)


def shapes_real_edit(count: int = 40, seed: int = 0) -> EditSet:
    """``count`` rendered photos (64 px, one object), each with three colour swaps and its object's mask."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        sample = world.random_sample(int(rng.integers(2**31 - 1)), size=64, template="simple")
        obj = sample.objects[0]
        others = [c for c in world.COLORS if c != obj.color]
        targets = [world.caption("simple", c, obj.shape) for c in rng.choice(others, 3, replace=False)]
        cases.append(EditCase(f"photo-{i:03d}", world.caption("simple", obj.color, obj.shape), targets,
                              mask=obj.mask.astype(bool), seed=seed + i,
                              extra={"render": sample.image, "color": obj.color, "shape": obj.shape}))
    return EditSet("shapes-real-edit", cases)


def _strip(prompt: str) -> str:
    return " ".join(str(prompt).replace("[", "").replace("]", "").split())


def _image_root(images: Path | None, data: Path) -> Path:
    return Path(images) if images else Path(data).parent / "annotation_images"


def _read_json(path: Path):
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"dataset file {path} does not exist", "give the dataset's JSON file with --data")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInput(f"{path} is not valid JSON ({first_line(err)})", "give the dataset's JSON file") from None


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise BadInput(f"dataset file {path} does not exist", "give a CSV with columns source, target")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
