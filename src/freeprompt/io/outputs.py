"""Run folders: images, a labelled grid, run.json and optional latents, written atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from PIL import Image, ImageDraw, ImageFont

from ..errors import BadInput
from .runinfo import device_description, package_versions


def check_writable(out_dir: Path) -> Path:
    """Fail early, before any model is loaded, if ``out_dir`` cannot be created or written."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"output path {out_dir} exists and is not a folder", "choose another --out")
    parent = out_dir if out_dir.exists() else _existing_parent(out_dir)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"cannot write to {parent}", "choose an --out folder you can write to")
    return out_dir


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    if not path.is_dir():
        raise BadInput(f"{path} is a file, so {path} cannot hold an output folder", "choose another --out")
    return path


@contextmanager
def atomic_folder(out_dir: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir``; on success its files replace those in ``out_dir``, on
    failure it is removed, so no half-written output is left behind."""
    out_dir = Path(out_dir)
    check_writable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        yield tmp
        if not out_dir.exists():
            os.replace(tmp, out_dir)
        else:
            for item in tmp.iterdir():
                os.replace(item, out_dir / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def temporary_beside(path: Path) -> Path:
    """A temporary name next to ``path``, unique per process and thread (several may write the same file)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` under a temporary name, then rename: readers see the old file or the new one, never half."""
    tmp = temporary_beside(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, data: dict, indent: int = 2) -> None:
    write_text_atomic(path, json.dumps(data, indent=indent, default=str) + "\n")


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
    image's edit) into ``out_dir``, atomically."""
    start = time.perf_counter()
    names = ["source"] + [f"target_{i}" for i in range(1, len(result.images))]
    with atomic_folder(Path(out_dir)) as tmp:
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
        timings = {**result.timings, "save_s": time.perf_counter() - start}
        write_json(tmp / "run.json", {"params": result.params, "model": model, "versions": package_versions(),
                                      "machine": device_description(model.get("device", "cpu")), "timings": timings,
                                      "files": files, **(extra or {})})
    return Path(out_dir)
