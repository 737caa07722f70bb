"""Run folders: images, a labelled grid, run.json and optional latents, written atomically."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..errors import BadInput
from .runinfo import device_description, package_versions

OWN_MARKERS = ("run.json", "settings.json")  # files that show a folder holds freeprompt's results


def check_writable(out_dir: Path) -> Path:
    """Fail early, before any model is loaded, if ``out_dir`` cannot be created or written."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"output path {out_dir} exists and is a file, not a folder", "choose another --out")
    parent = out_dir if out_dir.exists() else _existing_parent(out_dir)
    if not os.access(parent, os.W_OK | os.X_OK) or _read_only_mount(parent):
        raise BadInput(f"cannot write to {parent}", "choose an --out folder you can write to")
    return out_dir


def check_output_folder(out_dir: Path, overwrite: bool = False, resumable: bool = False) -> Path:
    """``check_writable``, and refuse a non-empty folder this run would mix its files with: an edit's folder unless
    ``overwrite``, which replaces an earlier freeprompt run's folder only when it holds nothing but the files that
    run lists in its ``run.json``; a resumable run's folder unless it holds such a run's results (``settings.json``;
    whether they match is checked then). The current folder and the folders above it are never an output folder."""
    out_dir = check_writable(out_dir)
    if not str(out_dir).strip() or Path.cwd().resolve().is_relative_to(out_dir.resolve()):
        raise BadInput(f"--out {str(out_dir)!r} is the current folder or one above it, which a run would replace",
                       "give a new folder for the results, e.g. --out out/run1")
    present = sorted(p.name for p in out_dir.iterdir()) if out_dir.exists() else []
    if not present or (resumable and "settings.json" in present):
        return out_dir
    if "settings.json" in present:  # not resumable here: another command's results, which --overwrite never clears
        raise BadInput(f"output folder {out_dir} holds an earlier run of a benchmark or an evaluation",
                       "choose a new --out folder")
    foreign = sorted(set(present) - _own_files(out_dir)) if "run.json" in present else present
    if foreign:
        raise BadInput(f"output folder {out_dir} holds files freeprompt did not write ({', '.join(foreign[:3])}"
                       f"{', ...' if len(foreign) > 3 else ''}), so --overwrite will not clear it",
                       "choose a new or empty --out folder")
    if not overwrite:
        raise BadInput(f"output folder {out_dir} holds an earlier run", "choose a new --out folder, or add --overwrite "
                       "to replace that run")
    return out_dir


def _own_files(out_dir: Path) -> set[str]:
    """The names in ``out_dir`` that the run whose ``run.json`` is there wrote: the files it lists (a comparison's
    method folders by their first path part) and ``run.json`` itself; none when the run.json is unreadable."""
    try:
        listed = json.loads((out_dir / "run.json").read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    if not isinstance(listed, list):
        return set()
    return {"run.json"} | {str(name).split("/")[0] for name in listed if str(name).strip("./")}


def _read_only_mount(path: Path) -> bool:
    """``os.access`` says yes on read-only or pseudo file systems (``/proc``) for root; statvfs knows."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY) or str(Path(path).resolve()).startswith(("/proc", "/sys"))
    except OSError:
        return True


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    if not path.is_dir():
        raise BadInput(f"{path} is a file, so it cannot hold an output folder", "choose another --out")
    return path


@contextmanager
def atomic_folder(out_dir: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir``; on success it becomes ``out_dir`` (``replace``: swapped in whole
    for an earlier run's folder; else its files are moved into an existing folder), on failure it is removed, so
    no half-written output is left behind."""
    out_dir = Path(out_dir)
    check_writable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir.parent, (f".{out_dir.name}.*.partial", f".{out_dir.name}.*.old"))
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; an output folder gets the usual mode
    try:
        yield tmp
        if replace and out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, old / "run")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        elif not out_dir.exists():
            os.replace(tmp, out_dir)
        else:
            for item in tmp.iterdir():
                os.replace(item, out_dir / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


STALE_AFTER_S = 3600  # a temporary file or folder this old belongs to a killed run: no writer keeps one that long


def remove_stale_temporaries(folder: Path, patterns: tuple[str, ...] = (".*.tmp-*", ".*.partial", ".*.old",
                                                                        ".*.tmp")) -> int:
    """Delete what killed runs left in ``folder`` (temporary files and ``.partial`` folders older than an hour);
    returns how many. Fresh ones may belong to a run in progress and are kept."""
    removed, now = 0, time.time()
    for pattern in patterns:
        for path in Path(folder).glob(pattern):
            try:
                if now - path.lstat().st_mtime < STALE_AFTER_S:
                    continue
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
                removed += 1
            except OSError:
                continue  # another process removed it first, or it is not ours to remove
    return removed


def temporary_beside(path: Path) -> Path:
    """A temporary name next to ``path``, unique per process and thread (several may write the same file)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write; when the block ends it replaces ``path`` in one rename (readers see
    the old file or the new one, never half), and when it fails (a full disk, Ctrl-C) it is removed, so no
    temporary is left behind."""
    tmp = temporary_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold the lock file ``path`` for the block: a second process asking for it (another run writing the same
    table) is refused in one line instead of interleaving its rows. The lock goes with the process."""
    import fcntl

    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise BadInput(f"another run is writing {what} now", "wait for it to finish, or use another --out folder "
                           "(several processes of one run take --num-shards and --shard-index)") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` under a temporary name, then rename: readers see the old file or the new one, never half."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: dict, indent: int = 2) -> None:
    """Strict JSON (NaN and infinities written as null, which every JSON reader accepts), atomically."""
    write_text_atomic(path, json.dumps(json_safe(data), indent=indent, default=str, allow_nan=False) + "\n")


def json_check(data: dict) -> str:
    """A checksum of ``data`` as strict JSON (key order ignored), to find results damaged or edited after writing."""
    text = json.dumps(json_safe(data), sort_keys=True, default=str, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def json_safe(value):
    """``value`` with every non-finite float replaced by None, through dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def labelled_grid(images: list[Image.Image], labels: list[str]) -> Image.Image:
    """Images side by side, each with its label above it."""
    font = ImageFont.load_default()
    w, h = images[0].size
    band = 14 * max(1, max(len(_wrap(label, w)) for label in labels)) + 6
    grid = Image.new("RGB", (w * len(images), h + band), "white")
    draw = ImageDraw.Draw(grid)
    for i, (img, label) in enumerate(zip(images, labels)):
        grid.paste(img.convert("RGB"), (i * w, band))
        for j, line in enumerate(_wrap(label, w)):
            draw.text((i * w + 3, 3 + 14 * j), line, fill="black", font=font)
    return grid


def _wrap(text: str, width_px: int, char_px: int = 6) -> list[str]:
    per_line = max(8, width_px // char_px)
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > per_line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return [ln if len(ln) <= per_line else ln[: per_line - 1] + "…" for ln in lines]


def save_edit(result, out_dir: Path, model: dict, save_latents: bool = False, extra: dict | None = None) -> Path:
    """Write source.png, target_<i>.png, grid.png, run.json (and latents.safetensors; input.png for a real
    image's edit) as the folder ``out_dir``, atomically; an earlier run there is replaced whole (the caller
    checked with ``check_output_folder`` that it may be)."""
    start = time.perf_counter()
    names = ["source"] + [f"target_{i}" for i in range(1, len(result.images))]
    with atomic_folder(Path(out_dir), replace=True) as tmp:
        for name, img in zip(names, result.images):
            img.save(tmp / f"{name}.png")
        first = (f"photo, {result.params.get('inversion')} inversion" if result.params.get("real_image")
                 else f"source: {result.prompts[0]}")
        labels = [first] + [f"target {i}: {p}" for i, p in enumerate(result.prompts[1:], 1)]
        labelled_grid(result.images, labels).save(tmp / "grid.png")
        files = [f"{n}.png" for n in names] + ["grid.png"]
        if result.input_image is not None:
            result.input_image.save(tmp / "input.png")
            files.append("input.png")
        if save_latents:
            from safetensors.torch import save_file

            tensors = {name: result.latents[i].contiguous() for i, name in enumerate(names)}
            tensors["initial"] = result.initial_latents.contiguous()
            save_file(tensors, str(tmp / "latents.safetensors"))
            files.append("latents.safetensors")
        timings = {**result.timings, "save_s": time.perf_counter() - start}
        write_json(tmp / "run.json", {"params": result.params, "model": model, "versions": package_versions(),
                                      "machine": device_description(model.get("device", "cpu")), "timings": timings,
                                      "files": files, **(extra or {})})
    return Path(out_dir)


def save_comparison(results: dict, out_dir: Path, model: dict, save_latents: bool = False,
                    extra: dict | None = None) -> Path:
    """Several methods' edits of one source: each method's folder as ``save_edit`` writes it (``out_dir/<method>``),
    a ``grid.png`` with a row per method (source, then targets) and a ``run.json`` naming them, all atomically."""
    with atomic_folder(Path(out_dir), replace=True) as tmp:
        for name, result in results.items():
            save_edit(result, tmp / name, model, save_latents, extra)
        rows = [labelled_grid(r.images, [f"{name}: {p}" for p in r.prompts]) for name, r in results.items()]
        sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
        for i, row in enumerate(rows):
            sheet.paste(row, (0, sum(r.height for r in rows[:i])))
        sheet.save(tmp / "grid.png")
        write_json(tmp / "run.json", {"methods": list(results), "model": model, "versions": package_versions(),
                                      "files": ["grid.png", *(f"{name}/run.json" for name in results)],
                                      **(extra or {})})
    return Path(out_dir)
