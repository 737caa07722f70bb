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

Everything is checked here, before any model is loaded. A malformed file is refused in one line (``BadInput``): the
work of reading it is bounded (``MAX_DATA_BYTES``, UTF-8 with or without a BOM, ``MAX_JSON_DEPTH`` levels of JSON,
``CSV_FIELD_LIMIT`` characters in a CSV cell) and each format's top-level type is checked. Every row is then checked
on its own: its prompts (text, at most ``MAX_PROMPT_CHARS``), its image (inside the images folder after resolving
symlinks and ``..``, decoded in full as the edit will decode it, at least ``editing.images.MIN_SIDE`` pixels on
each side), its mask
(decoded, the size of its image; PIE-Bench's run-length code: an even count of non-negative integers, runs inside the
image). A row that cannot be used is skipped with a short reason in ``EditSet.skipped`` ("row 12: image ../x.png is
outside --images"), never fatal; a set with no usable row is refused in one line. ``limit`` bounds the work: rows of
cases past the first ``limit`` are not checked, and only ``limit`` shapes photos are rendered.
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInput, FreepromptError, first_line
from ..shapes import world

# The paper's 28 car colours (a fact of the paper: the word list of Car-fake-edit).
CAR_COLORS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "black", "white", "gray", "brown", "beige",
              "cyan", "magenta", "teal", "lime", "olive", "navy", "maroon", "silver", "gold", "bronze", "peach",
              "coral", "indigo", "violet", "turquoise", "chocolate")
FPE_SETS = ("car-fake-edit", "car-real-edit", "imagenet-fake-edit", "imagenet-real-edit")
DATASETS = FPE_SETS + ("pie-bench", "custom", "shapes-fake-edit", "shapes-real-edit")
PIE_SIZE = 512
SHAPES_REAL_PHOTOS = 40  # the rendered photos of shapes-real-edit
MAX_DATA_BYTES = 64 * 2**20  # a dataset file (PIE-Bench's mapping_file.json is a few MB)
MAX_JSON_DEPTH = 32  # levels of JSON nesting (the formats need 3); deeper files are refused before parsing
CSV_FIELD_LIMIT = 2**20  # characters in one CSV cell (Python's csv default is 131072); longer cells are refused
MAX_PROMPT_CHARS = 2000  # far beyond the text encoders' 77 tokens: a longer "prompt" is a misread row
REASON_CHARS = 200  # a row's reason is cut to this length, names inside it to 60
_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # a case id that is a plain file name (examples/<id>.png)


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
    skipped: list[str] = field(default_factory=list)  # "row 12: reason", one per unusable row

    @property
    def real(self) -> bool:
        return any(case.image is not None or "render" in case.extra for case in self.cases)

    @property
    def pairs(self) -> int:
        return sum(len(case.targets) for case in self.cases)


def load(name: str, data: Path | None = None, images: Path | None = None, limit: int | None = None,
         seed: int = 0) -> EditSet:
    """The dataset ``name`` (see ``DATASETS``), at most ``limit`` cases, every row checked (see the module's doc)."""
    if name not in DATASETS:
        raise BadInput(f"unknown dataset {name!r}", f"use one of {', '.join(DATASETS)}")
    needs_data = name in FPE_SETS[1:] + ("pie-bench", "custom")
    if needs_data and data is None:
        raise BadInput(f"dataset {name} needs its file",
                       "give --data FILE (e.g. Car_real_edit.json, mapping_file.json)")
    if images is not None and not Path(images).is_dir():
        raise BadInput(f"--images {images} is not a folder", "give the folder holding the dataset's images")
    limit = limit or None
    if name == "car-fake-edit":
        dataset = car_fake_edit(seed)
    elif name == "shapes-fake-edit":
        dataset = shapes_fake_edit(seed)
    elif name == "shapes-real-edit":
        dataset = shapes_real_edit(min(limit or SHAPES_REAL_PHOTOS, SHAPES_REAL_PHOTOS), seed)
    elif name == "pie-bench":
        dataset = pie_bench(_mapping_of(data, _read_json(data)), _image_root(images, data), seed, limit)
    elif name == "custom":
        dataset = custom(data, images, seed, limit)
    else:
        rows = _rows_of(data, _read_json(data), "the paper's released JSON: a list of {soure_prompt, edit_prompt, ...}")
        dataset = fpe_json(name, rows, images if name.endswith("real-edit") else None, seed, limit)
    dataset.cases = dataset.cases[:limit] if limit else dataset.cases
    if not dataset.cases:
        where = f" ({data})" if data is not None else ""
        first = dataset.skipped[0] if dataset.skipped else "it has no rows"
        raise BadInput(f"dataset {name}{where} has no usable case ({len(dataset.skipped)} rows skipped; {first})",
                       "check --data and --images")
    return dataset


def car_fake_edit(seed: int = 0) -> EditSet:
    """Car-fake-edit regenerated: 28 sources "a {colour} car", each with the 27 other colours as targets."""
    cases = [EditCase(f"car-{c}", f"a {c} car", [f"a {t} car" for t in CAR_COLORS if t != c], seed=seed + i)
             for i, c in enumerate(CAR_COLORS)]
    return EditSet("car-fake-edit", cases)


def fpe_json(name: str, rows, images: Path | None, seed: int = 0, limit: int | None = None) -> EditSet:
    """One of the paper's released files: rows of ``soure_prompt``, ``edit_prompt`` (and ``image_name`` for the
    real sets), grouped by source (and image) in file order; at most ``limit`` cases."""
    real = name.endswith("real-edit")
    if real and images is None:
        raise BadInput(f"{name} edits real images", "give --images DIR holding them by the names in the JSON")
    if not isinstance(rows, list):
        raise BadInput(f"the rows of {name} are a {_json_type(rows)}, not a list", "give the paper's released JSON")
    cases = _Cases(images, "--images", limit, seed)
    for n, row in enumerate(rows):
        try:
            if not isinstance(row, dict):
                raise ValueError(f"a {_json_type(row)}, not an object")
            source = row.get("soure_prompt", row.get("source_prompt"))
            image = row.get("image_name") if real else None
            if cases.wanted((source, image)):
                source, target = _prompt(source, "source prompt"), _prompt(row.get("edit_prompt"), "edit prompt")
                if real and not image:
                    raise ValueError("no image_name")
                cases.add((source, image), target, image)
        except (KeyError, TypeError, ValueError, OSError) as err:
            cases.skip(f"row {n}", err)
    return cases.edit_set(name)


def pie_bench(mapping: dict, images: Path, seed: int = 0, limit: int | None = None) -> EditSet:
    """PIE-Bench's ``mapping_file.json``: per id ``image_path``, ``original_prompt``, ``editing_prompt``,
    ``editing_type_id``, ``blended_word`` and the run-length encoded ``mask`` (at the image's size, 512x512 in
    PIE-Bench); at most ``limit`` cases."""
    if not isinstance(mapping, dict):
        raise BadInput(f"PIE-Bench's mapping is a {_json_type(mapping)}, not an object", "give mapping_file.json")
    cases = _Cases(images, "the images folder", limit, seed)
    for key, row in mapping.items():
        if not cases.wanted(key):
            break
        try:
            if not isinstance(row, dict):
                raise ValueError(f"a {_json_type(row)}, not an object")
            if not _ID.fullmatch(key):
                raise ValueError("its id is not a plain name (letters, digits, . _ -)")
            source = _prompt(_strip(row.get("original_prompt")), "original_prompt")
            target = _prompt(_strip(row.get("editing_prompt")), "editing_prompt")
            width, height = cases.image(row.get("image_path"))[1]
            encoded = row.get("mask")
            mask = decode_rle([] if encoded is None else encoded, (height, width))
            extra = {"edit_type": _text(row.get("editing_type_id", "")),
                     "blended_word": _text(row.get("blended_word", ""))}
            cases.add(key, target, row["image_path"], mask, key, extra, source)
        except (KeyError, TypeError, ValueError, OSError) as err:
            cases.skip(f"row {key}", err)
    return cases.edit_set("pie-bench")


def decode_rle(encoded, shape: tuple[int, int]) -> np.ndarray:
    """PIE-Bench's mask encoding: pairs (start, length) of runs of ones in the row-major flattened mask; the
    one-pixel border is set, as its authors do to absorb annotation errors at the edge. A code that is not a list
    of an even count of non-negative integers, or with a run outside the image, is refused (``BadInput``)."""
    height, width = shape
    total = height * width
    fix = f"give [start, length, ...] runs inside the image ({PIE_SIZE}x{PIE_SIZE} in PIE-Bench)"
    if not isinstance(encoded, (list, tuple)) or any(type(v) is not int for v in encoded):
        what = _json_type(encoded) if not isinstance(encoded, (list, tuple)) else "list holding other things"
        raise BadInput(f"mask is a {what}, not a list of integers", fix)
    if len(encoded) % 2:
        raise BadInput(f"mask has an odd count of numbers ({len(encoded)}), not (start, length) pairs", fix)
    if encoded and min(encoded) < 0:
        raise BadInput(f"mask has a negative start or length ({min(encoded)})", fix)
    starts, lengths = encoded[0::2], encoded[1::2]
    for start, length in zip(starts, lengths):
        if start >= total or start + length > total:
            raise BadInput(f"mask run ({start}, {length}) goes past the {width}x{height} image's {total} pixels", fix)
    flat = np.zeros(total, bool)
    for start, length in zip(starts, lengths):
        flat[start:start + length] = True
    mask = flat.reshape(shape)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return mask


def custom(path: Path, images: Path | None, seed: int = 0, limit: int | None = None) -> EditSet:
    """Rows of ``source``, ``target``, optional ``image`` and ``mask`` (file names inside ``images``, else inside
    the file's folder; a mask the size of its image), grouped by source and image; at most ``limit`` cases."""
    path = Path(path)
    fix = "write a JSON list of {source, target, image?, mask?} or a CSV with those columns"
    rows = _rows_of(path, _read_json(path), fix) if path.suffix.lower() == ".json" else _read_csv(path)
    root, label = (Path(images), "--images") if images else (path.parent, f"the folder of {_short(path.name)}")
    cases = _Cases(root, label, limit, seed)
    for n, row in enumerate(rows):
        try:
            if not isinstance(row, dict):
                raise ValueError(f"a {_json_type(row)}, not an object")
            source, image = row.get("source"), row.get("image") or None
            if cases.wanted((source, image)):
                _custom_row(cases, row, source, image)
        except (KeyError, TypeError, ValueError, OSError) as err:
            cases.skip(f"row {n}", err)
    return cases.edit_set("custom")


def _custom_row(cases: _Cases, row: dict, source, image) -> None:
    source, target = _prompt(source, "source"), _prompt(row.get("target"), "target")
    size = cases.image(image)[1] if image is not None else None
    mask = None
    if row.get("mask"):
        mask = _mask_file(cases.path(row["mask"], "mask"), row["mask"], size)
    cases.add((source, image), target, image, mask)


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


def shapes_real_edit(count: int = SHAPES_REAL_PHOTOS, seed: int = 0) -> EditSet:
    """``count`` rendered photos (64 px, one object), each with three colour swaps and its object's mask; the first
    ``k`` photos of any count are the same ``k``."""
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


class _Cases:
    """Rows gathered into cases by key (source and image) in file order, at most ``limit`` cases; each image file
    checked once; the reasons of the rows skipped."""

    def __init__(self, root: Path | None, label: str, limit: int | None, seed: int):
        self.root, self.label, self.limit, self.seed = (Path(root) if root else None), label, limit or None, seed
        self.groups: dict = {}
        self.skipped: list[str] = []
        self.images: dict[str, tuple | str] = {}  # name -> (path, (width, height)), or why it cannot be used

    def wanted(self, key) -> bool:
        """False for a row that would start a case past the first ``limit``: it is neither checked nor counted."""
        if self.limit is None or len(self.groups) < self.limit:
            return True
        try:
            return key in self.groups
        except TypeError:  # an unhashable field: not a key of any case
            return False

    def path(self, name, what: str) -> Path:
        """``name`` inside the root folder, after resolving symlinks and ``..``, an existing file."""
        if name is None:
            raise ValueError(f"no {what}")
        if not isinstance(name, str) or not name.strip() or "\0" in name:
            raise ValueError(f"{what} {_short(repr(name))} is not a file name")
        if self.root is None:
            raise ValueError(f"{what} given but there is no images folder")
        joined = self.root / name
        try:
            inside = joined.resolve().is_relative_to(self.root.resolve())
        except RuntimeError:  # a symlink loop (Python 3.11)
            raise ValueError(f"{what} {_short(name)} is a symlink loop") from None
        if not inside:
            raise ValueError(f"{what} {_short(name)} is outside {self.label}")
        try:
            found = joined.is_file()
        except OSError as err:  # a name too long for the file system, and the like
            raise ValueError(f"{what} {_short(name)} cannot be read ({err.strerror or first_line(err)})") from None
        if not found:
            raise ValueError(f"{what} {_short(name)} missing")
        return joined

    def image(self, name) -> tuple[Path, tuple[int, int]]:
        """The image file ``name`` and its (width, height), checked once; ValueError naming why it is unusable."""
        if not isinstance(name, str) or name not in self.images:
            try:
                path = self.path(name, "image")
                found = (path, _image_size(path))
            except (ValueError, OSError) as err:
                if not isinstance(name, str):
                    raise
                found = _reason(err)
            self.images[name] = found
        if isinstance(self.images[name], str):
            raise ValueError(self.images[name])
        return self.images[name]

    def add(self, key, target: str, image_name=None, mask=None, case_id=None, extra=None, source=None) -> None:
        if key not in self.groups:
            image = None if image_name is None else self.image(image_name)[0]
            self.groups[key] = EditCase(case_id or f"{len(self.groups):05d}", source or key[0], [], image, mask,
                                        self.seed + len(self.groups), extra or {})
        self.groups[key].targets.append(target)

    def skip(self, row: str, err: Exception) -> None:
        self.skipped.append(_one_line(f"{_short(row)}: {_reason(err)}", REASON_CHARS))

    def edit_set(self, name: str) -> EditSet:
        return EditSet(name, list(self.groups.values()), self.skipped)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as the edit will see it (EXIF orientation applied), after decoding it in full
    the way the edit does (``editing.images.load_image``): a file that would fail there fails here instead."""
    from ..editing import images as im

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # animated files and the like: the edit warns, once, when it runs
            with im.open_image(path) as img:
                (width, height), turned = img.size, _turned(img)
            im.load_image(path, (im.MIN_SIDE, im.MIN_SIDE), "fit")
    except FreepromptError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever else a decoder raises on a broken file: this row is unusable
        raise ValueError(f"image {_short(path.name)} cannot be decoded ({first_line(err)})") from None
    return (height, width) if turned else (width, height)


def _mask_file(path: Path, name: str, size: tuple[int, int] | None) -> np.ndarray:
    """A mask image decoded (white: edited), at least ``MIN_SIDE`` pixels and the size of its image."""
    from ..editing import images as im

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with im.open_image(path) as img:
                width, height = img.size
                if width * height <= im.MAX_DECODE_PIXELS:
                    img.load()
                    mask = np.asarray(_upright(img).convert("L")) > 127
                    height, width = mask.shape
    except FreepromptError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever else a decoder raises on a broken file: this row is unusable
        raise ValueError(f"mask {_short(name)} cannot be decoded ({first_line(err)})") from None
    if width * height > im.MAX_DECODE_PIXELS:
        raise ValueError(f"mask {_short(name)} is {width}x{height} pixels, too large to decode")
    if size is not None and (width, height) != tuple(size):
        raise ValueError(f"mask {_short(name)} is {width}x{height} pixels but its image is {size[0]}x{size[1]}")
    if min(height, width) < im.MIN_SIDE:
        raise ValueError(f"mask {_short(name)} is {width}x{height} pixels, smaller than {im.MIN_SIDE}x{im.MIN_SIDE}")
    return mask


def _turned(img) -> bool:
    """Whether the image's EXIF orientation turns it by 90 degrees (its width and height swap when loaded)."""
    try:
        return img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - a broken EXIF block is ignored when the image loads, too
        return False


def _upright(img):
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - as when the image loads: a broken EXIF block leaves it as it is
        return img


def _prompt(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"no {what}" if value is None or isinstance(value, str) else f"{what} is not text")
    if len(value) > MAX_PROMPT_CHARS:
        raise ValueError(f"{what} is {len(value)} characters long, over {MAX_PROMPT_CHARS}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid text (a lone surrogate)") from None
    return value


def _strip(prompt):
    """PIE-Bench's prompt without the ``[]`` around edited words (anything else as it is, to be refused)."""
    return " ".join(prompt.replace("[", "").replace("]", "").split()) if isinstance(prompt, str) else prompt


def _text(value) -> str:
    return _short(str(value)) if isinstance(value, (str, int, float)) else ""


def _image_root(images: Path | None, data: Path) -> Path:
    if images:
        return Path(images)
    root = Path(data).parent / "annotation_images"
    if not root.is_dir():
        raise BadInput(f"there is no folder annotation_images beside {data}",
                       "give --images PIE-Bench_v1/annotation_images")
    return root


def _read_text(path: Path, kind: str) -> str:
    """A dataset file's text: an existing file, at most ``MAX_DATA_BYTES``, UTF-8 (a BOM is dropped)."""
    path = Path(path)
    fix = f"give the dataset's {kind} file with --data"
    if not path.exists():
        raise BadInput(f"dataset file {path} does not exist", fix)
    if not path.is_file():
        raise BadInput(f"dataset file {path} is not a file", fix)
    try:
        size = path.stat().st_size
        if size > MAX_DATA_BYTES:
            raise BadInput(f"dataset file {path} is {size / 2**20:.0f} MB, over the limit of "
                           f"{MAX_DATA_BYTES // 2**20} MB", "split it into smaller files")
        raw = path.read_bytes()
    except OSError as err:
        raise BadInput(f"cannot read dataset file {path}: {first_line(err)}", "check the file and its permissions") \
            from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BadInput(f"dataset file {path} is not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})",
                       "save it as UTF-8") from None


def _read_json(path: Path):
    path = Path(path)
    text = _read_text(path, "JSON")
    depth = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise BadInput(f"{path} nests {depth} levels deep, more than the {MAX_JSON_DEPTH} a dataset needs",
                       "give the dataset's own JSON file (rows of text fields)")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, and numbers Python will not convert
        raise BadInput(f"{path} is not valid JSON ({_one_line(first_line(err), 120)})",
                       "give the dataset's JSON file") from None


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)  # unterminated: to the end (linear time)


def _json_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in a JSON text (brackets inside strings not counted), in bounded
    memory, before the text is parsed (a parser recurses once per level)."""
    brackets = re.sub(r"[^\[\]{}]+", "", _JSON_STRING.sub("", text)).encode("ascii")
    deepest = level = 0
    for start in range(0, len(brackets), 1 << 22):
        chunk = np.frombuffer(brackets[start:start + (1 << 22)], np.uint8)
        running = level + np.cumsum(np.where((chunk == ord("[")) | (chunk == ord("{")), 1, -1))
        deepest, level = max(deepest, int(running.max())), int(running[-1])
    return deepest


def _read_csv(path: Path) -> list[dict]:
    """The rows of a CSV with a header row holding ``source`` and ``target``; cells of at most ``CSV_FIELD_LIMIT``."""
    text = _read_text(path, "CSV")
    before = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows, columns = list(reader), reader.fieldnames
    except csv.Error as err:
        if "field larger than field limit" in str(err):
            raise BadInput(f"{path} has a cell over {CSV_FIELD_LIMIT} characters",
                           "keep each cell to a prompt or a file name") from None
        raise BadInput(f"{path} is not a valid CSV ({first_line(err)})",
                       "save it as comma-separated values with a header row") from None
    finally:
        csv.field_size_limit(before)
    fix = "write a header row source,target (optional image, mask) and a row per edit"
    if not columns:
        raise BadInput(f"{path} is empty", fix)
    missing = [c for c in ("source", "target") if c not in columns]
    if missing:
        raise BadInput(f"{path} has no column {' or '.join(missing)} in its header row", fix)
    return rows


def _rows_of(path, value, fix: str) -> list:
    """A JSON file's rows: a list holding objects (a row that is not one is skipped later)."""
    if not isinstance(value, list):
        raise BadInput(f"{path} holds a JSON {_json_type(value)}, not a list of rows", fix)
    if value and not any(isinstance(row, dict) for row in value):
        raise BadInput(f"{path} is a list of {_json_type(value[0])}s, not of objects (rows)", fix)
    return value


def _mapping_of(path, value) -> dict:
    """PIE-Bench's mapping: an object of objects, one per image."""
    fix = "give PIE-Bench's mapping_file.json: {id: {image_path, original_prompt, editing_prompt, mask, ...}}"
    if not isinstance(value, dict):
        raise BadInput(f"{path} holds a JSON {_json_type(value)}, not PIE-Bench's mapping (an object)", fix)
    if value and not any(isinstance(row, dict) for row in value.values()):
        raise BadInput(f"{path} maps ids to {_json_type(next(iter(value.values())))}s, not to objects", fix)
    return value


def _json_type(value) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _reason(err: Exception) -> str:
    return err.problem if isinstance(err, FreepromptError) else first_line(err)


def _short(text: str, limit: int = 60) -> str:
    return _one_line(str(text), limit)


def _one_line(text: str, limit: int) -> str:
    """``text`` on one line (control characters as spaces) and at most ``limit`` characters."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text[:limit * 4]).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
