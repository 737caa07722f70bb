"""Image input for real-image editing: load any common image file safely and bring it to the model's size.

``load_image(path, size, resize)`` reads PNG, JPEG (EXIF orientation applied), WebP, GIF (first frame) and
whatever else Pillow reads, and returns an RGB image of exactly ``size = (width, height)``:

* ``"crop"`` (default): scale so the image covers the box (shorter side fits), then cut the centre;
* ``"pad"``: scale so the whole image fits in the box (longer side fits), then pad with white;
* ``"fit"``: plain resize to the box; the aspect ratio may change.

Transparent images are flattened on white; greyscale, 16-bit, CMYK and palette images become RGB.
Every unusable input raises ``BadInput`` with one line naming the problem and the fix. The size is read from
the file header before anything is decoded: images over ``MAX_DECODE_PIXELS`` are decoded at a reduced scale
where the format allows it (JPEG: ``Image.draft``) and refused otherwise, so no input can exhaust memory.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..diffusion import latent_shape, vae_precision
from ..errors import BadInput, first_line

RESIZE_MODES = ("crop", "pad", "fit")
MIN_SIDE = 16  # smaller inputs hold too little to edit
MAX_DECODE_PIXELS = 50_000_000  # ~150 MB as RGB; larger files must be reducible while decoding (JPEG)
BACKGROUND = (255, 255, 255)  # what transparency and padding become


def load_image(path: str | os.PathLike, size: tuple[int, int], resize: str = "crop") -> Image.Image:
    """The image at ``path`` as RGB, resized to ``size = (width, height)`` with ``resize`` (crop, pad, fit)."""
    width, height = _check_size(size)
    check_resize_mode(resize)
    path = Path(path)
    img = open_image(path)
    with img:
        frames = getattr(img, "n_frames", 1)
        if frames > 1 and img.format != "MPO":  # MPO: a phone JPEG with extra previews, not an animation
            warnings.warn(f"{path.name} is animated ({frames} frames); using its first frame", stacklevel=2)
        _reduce_while_decoding(img, path, (width, height), resize)
        try:
            img.load()  # force the full decode: truncated or corrupt data fails here, not later
        except Image.DecompressionBombError as err:
            raise BadInput(f"image {path.name} is too large to decode safely ({first_line(err)})",
                           f"downscale it below {MAX_DECODE_PIXELS // 1_000_000} megapixels first") from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise BadInput(f"image {path.name} is truncated or corrupt ({first_line(err)})",
                           "re-export or re-download the file") from None
        try:
            img = ImageOps.exif_transpose(img)
        except Exception:  # noqa: BLE001 - a broken EXIF block should not make a readable image unusable
            pass
        return prepare_image(img, (width, height), resize, name=path.name)


def open_image(path: Path) -> Image.Image:
    """The image file at ``path`` opened (its header read, not yet decoded), or a one-line error; cheap enough to
    check a photo before any model is loaded."""
    path = Path(path)
    if not path.exists():
        raise BadInput(f"image {path} does not exist", "check the path")
    if not path.is_file():
        raise BadInput(f"image path {path} is not a file", "give the path of an image file (PNG, JPEG, WebP)")
    try:
        with warnings.catch_warnings():
            # The size is checked against our own, lower limit before decoding.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as err:
        raise BadInput(f"image {path.name} is too large to open safely ({first_line(err)})",
                       f"downscale it below {MAX_DECODE_PIXELS // 1_000_000} megapixels first") from None
    except UnidentifiedImageError:
        raise BadInput(f"{path.name} is not an image Pillow can read", "give a PNG, JPEG or WebP file") from None
    except OSError as err:
        raise BadInput(f"cannot read image {path}: {first_line(err)}", "check the file and its permissions") from None


def prepare_image(image: Image.Image, size: tuple[int, int], resize: str = "crop",
                  name: str = "the image") -> Image.Image:
    """An in-memory image as RGB of exactly ``size = (width, height)`` (see the module docstring for modes)."""
    width, height = _check_size(size)
    check_resize_mode(resize)
    if image.width < MIN_SIDE or image.height < MIN_SIDE:
        raise BadInput(f"{name} is {image.width}x{image.height} pixels, smaller than the minimum of "
                       f"{MIN_SIDE}x{MIN_SIDE}", f"give an image at least {MIN_SIDE} pixels on each side")
    rgb = to_rgb(image)
    if resize == "fit":
        return _resized(rgb, (width, height))
    scale = (max if resize == "crop" else min)(width / rgb.width, height / rgb.height)
    inner = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    if resize == "crop":
        inner = (max(inner[0], width), max(inner[1], height))
        scaled = _resized(rgb, inner)
        left, top = (inner[0] - width) // 2, (inner[1] - height) // 2
        return scaled.crop((left, top, left + width, top + height))
    inner = (min(inner[0], width), min(inner[1], height))
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    canvas.paste(_resized(rgb, inner), ((width - inner[0]) // 2, (height - inner[1]) // 2))
    return canvas


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency flattened on white; 16-bit and float greyscale scaled to 8 bits."""
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = arr.max() if arr.size else 0.0
        if mode == "F" and top <= 1.0:
            arr = arr * 255.0
        elif top > 255.0:
            arr = arr / (65535.0 if top <= 65535.0 else top) * 255.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info) \
        or (mode in ("L", "RGB") and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


@torch.no_grad()
def image_to_latents(pipe, image: Image.Image) -> torch.Tensor:
    """(1, C, h, w) float32 latents of an RGB image through the pipeline's VAE (posterior mean, scaled)."""
    latent_shape(pipe, image.height, image.width)  # BadInput unless the size suits the model
    vae = pipe.vae
    pixels = pipe.image_processor.preprocess(to_rgb(image), height=image.height, width=image.width)
    with vae_precision(vae):
        posterior = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
    latents = posterior.mean.float()
    shift = getattr(vae.config, "shift_factor", None)
    if shift is not None:
        latents = latents - shift
    return latents * vae.config.scaling_factor


def psnr(a, b) -> float:
    """PSNR in dB between two images (PIL or uint8 arrays of the same size); 99 for identical images."""
    x = np.asarray(a.convert("RGB") if isinstance(a, Image.Image) else a, dtype=np.float64)
    y = np.asarray(b.convert("RGB") if isinstance(b, Image.Image) else b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"psnr of images of different shapes {x.shape} and {y.shape}")
    mse = float(np.mean((x - y) ** 2))
    return 99.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _reduce_while_decoding(img: Image.Image, path: Path, box: tuple[int, int], resize: str) -> None:
    """Refuse, or for JPEG decode at 1/2..1/8 scale, an image over the pixel limit, from its header size."""
    w, h = img.size
    if w * h <= MAX_DECODE_PIXELS:
        return
    too_big = BadInput(f"image {path.name} is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels), over the limit of "
                       f"{MAX_DECODE_PIXELS / 1e6:.0f} megapixels",
                       "downscale it first (or save it as JPEG, which is reduced while decoding)")
    if img.format != "JPEG":
        raise too_big
    # the smallest DCT scale that still covers what the resize needs (never upsample later)
    scale = (max if resize == "crop" else min)(box[0] / w, box[1] / h) if resize != "fit" else None
    need = (box[0], box[1]) if scale is None else (max(1, round(w * scale)), max(1, round(h * scale)))
    img.draft("RGB", need)
    if img.size[0] * img.size[1] > MAX_DECODE_PIXELS:
        raise too_big


def _resized(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    if img.size == tuple(size):
        return img
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _check_size(size) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise BadInput(f"image size {size!r} is not (width, height)",
                       "give two positive integers, e.g. 512 512") from None
    if width <= 0 or height <= 0:
        raise BadInput(f"image size {width}x{height} is not positive", "give two positive integers, e.g. 512 512")
    return width, height


def check_resize_mode(resize: str) -> None:
    if resize not in RESIZE_MODES:
        raise BadInput(f"unknown resize mode {resize!r}", f"use one of {', '.join(RESIZE_MODES)}")
