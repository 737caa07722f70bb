"""Oracle: reads colour, shape and mask of objects back from (possibly imperfect) shapes-world images.

numpy/PIL only. The shape classifier is a small softmax regression on rotation/scale invariant
mask features, fitted on degraded renders with a fixed seed (shape_classifier.npz, shipped with the package;
``python -m lab.fit_shape_classifier`` refits it after the shapes or the features change).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .world import BACKGROUND_COLORS, COLORS, SHAPES, bbox, check_word

_REFS = np.array([COLORS[c] for c in COLORS] + list(BACKGROUND_COLORS.values()), np.float32)
_N_PAL = len(COLORS)  # labels >= _N_PAL are background

CLASSIFIER_PATH = Path(__file__).with_name("shape_classifier.npz")
# The classifier is fitted on random_sample seeds >= FIT_SEED_MIN; evaluate on smaller seeds.
FIT_SEED_MIN = 2**32


# ---------------------------------------------------------------- image helpers

def as_uint8_image(image) -> np.ndarray:
    """HxWx3 uint8 from an integer array in [0, 255] or a float array in [0, 1]."""
    x = np.asarray(image)
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    lo, hi = (x.min(), x.max()) if x.size else (0, 0)
    if np.issubdtype(x.dtype, np.integer) and lo >= 0 and hi <= 255:
        return x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating) and lo >= -0.01 and hi <= 1.01:
        return np.clip(np.rint(x.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    raise ValueError(f"expected integers in [0, 255] or floats in [0, 1], got {x.dtype} in [{lo}, {hi}]")


def _median3(image) -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(as_uint8_image(image)))
    return np.asarray(img.filter(ImageFilter.MedianFilter(3)))


def _nearest(x: np.ndarray) -> np.ndarray:
    d = (_REFS**2).sum(1) - 2 * x @ _REFS.T  # squared distance up to the per-pixel |x|^2
    return d.argmin(-1)


def _labels(image: np.ndarray) -> np.ndarray:
    """Index of the nearest reference colour (palette, then backgrounds) per pixel, after a median."""
    return _nearest(_median3(image).astype(np.float32))


def components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4-connected components: (label map with -1 outside mask, component sizes)."""
    out = np.full(mask.shape, -1)
    box = bbox(mask)
    if box is None:
        return out, np.zeros(0, int)
    x0, y0, x1, y1 = box
    sub = mask[y0:y1, x0:x1]
    lab, sizes = _components_dense(sub)
    out[y0:y1, x0:x1] = lab
    return out, sizes


def _components_dense(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = mask.shape
    big = h * w
    lab = np.where(mask, np.arange(big).reshape(h, w), big)
    while True:
        m = lab.copy()
        np.minimum(m[1:], lab[:-1], out=m[1:])
        np.minimum(m[:-1], lab[1:], out=m[:-1])
        np.minimum(m[:, 1:], lab[:, :-1], out=m[:, 1:])
        np.minimum(m[:, :-1], lab[:, 1:], out=m[:, :-1])
        flat = np.where(mask, m, big).ravel()
        # Pointer jumping: a label is a pixel index of the same component, so follow it to that
        # pixel's label; this makes propagation logarithmic instead of linear in the diameter.
        for _ in range(4):
            flat = np.append(flat, big)[flat]
        new = flat.reshape(h, w)
        if np.array_equal(new, lab):
            break
        lab = new
    out = np.full((h, w), -1)
    _, inv = np.unique(lab[mask], return_inverse=True)
    out[mask] = inv.ravel()
    return out, np.bincount(inv.ravel())


def _min_area(shape) -> int:
    return max(3, round(0.002 * shape[0] * shape[1]))


def _keep_components(mask: np.ndarray, rel: float) -> np.ndarray:
    """Drop components smaller than the minimum area or than rel * the largest one."""
    lab, sizes = components(mask)
    if len(sizes) == 0:
        return mask.copy()
    keep = sizes >= max(_min_area(mask.shape), rel * sizes.max())
    return keep[lab] & mask  # lab == -1 indexes the last entry; "& mask" discards it


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, sizes = components(mask)
    if len(sizes) == 0:
        return mask.copy()
    return lab == sizes.argmax()


def dilate(mask: np.ndarray) -> np.ndarray:
    """The mask grown by one pixel (4-neighbourhood)."""
    p = np.pad(mask, 1)
    return mask | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]


def erode(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1)
    return mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


# ---------------------------------------------------------------- public mask/colour API

def color_mask(image: np.ndarray, color: str) -> np.ndarray:
    """Pixels whose nearest reference colour is `color` (median-denoised), specks removed."""
    check_word("color", color, COLORS)
    m = _labels(image) == list(COLORS).index(color)
    return _keep_components(m, rel=0.25)


def object_mask(image: np.ndarray) -> np.ndarray:
    """Pixels nearest to a palette colour rather than to any background colour, specks removed."""
    return _keep_components(_labels(image) < _N_PAL, rel=0.05)


def dominant_color(image: np.ndarray, mask: np.ndarray | None = None) -> str | None:
    """Palette colour covering most of the mask; the interior is used when there is one,
    since anti-aliased edges blend into the background and look like other colours."""
    if mask is None:
        mask = object_mask(image)
    if not mask.any():
        return None
    inner = erode(mask)
    if inner.sum() >= 4:
        mask = inner
    lab = _labels(image)[mask]
    counts = np.bincount(lab[lab < _N_PAL], minlength=_N_PAL)
    return list(COLORS)[int(counts.argmax())] if counts.any() else None


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union. Both empty -> 0.0: a failed edit (nothing found) must not score."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


# ---------------------------------------------------------------- shape features

_N_RAYS = 64
_N_HARM = 8


def _convex_hull_area(mask: np.ndarray) -> float:
    # Hull of the pixel squares' corners (not centres), so a filled n x n square has area n^2.
    ys, xs = np.nonzero(mask)
    rows = np.unique(ys)
    left = np.full(rows.max() + 1, 10**9)
    right = np.full(rows.max() + 1, -1)
    np.minimum.at(left, ys, xs)
    np.maximum.at(right, ys, xs)
    pts = set()
    for y in rows.tolist():
        lx, rx = int(left[y]), int(right[y]) + 1
        pts.update(((lx, y), (lx, y + 1), (rx, y), (rx, y + 1)))
    pts = sorted(pts)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def half(points):  # Andrew's monotone chain
        h = []
        for p in points:
            while len(h) >= 2 and cross(h[-2], h[-1], p) <= 0:
                h.pop()
            h.append(p)
        return h

    hull = np.array(half(pts)[:-1] + half(pts[::-1])[:-1], float)
    x, y = hull[:, 0], hull[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h, w = img.shape
    x = np.clip(x, 0, w - 1.001)
    y = np.clip(y, 0, h - 1.001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    return ((img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx) * (1 - fy)
            + (img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx) * fy)


def shape_features(mask: np.ndarray) -> np.ndarray | None:
    """Rotation/scale/translation invariant descriptor of a binary mask (None if too small)."""
    mask = np.asarray(mask, bool)
    area = int(mask.sum())
    if area < 6:
        return None
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean(), ys.mean()
    dx, dy = xs - cx, ys - cy
    cov = np.array([[np.mean(dx * dx), np.mean(dx * dy)], [np.mean(dx * dy), np.mean(dy * dy)]]) + 1 / 12
    ev = np.linalg.eigvalsh(cov)
    r_eq = np.sqrt(area / np.pi)
    # Third-order moments (skewness) separate triangle/heart/moon from the symmetric shapes.
    n3 = lambda p, q: np.mean(dx**p * dy**q) / r_eq**3  # noqa: E731
    skew = np.hypot(n3(3, 0) + n3(1, 2), n3(2, 1) + n3(0, 3))
    # Radial profile: outermost boundary along rays from the centroid, on a slightly smoothed mask
    # to get sub-pixel boundaries.
    pad = np.pad(mask.astype(np.float32), 2)
    soft = (pad[:-2, :-2] + pad[:-2, 1:-1] + pad[:-2, 2:] + pad[1:-1, :-2] + pad[1:-1, 1:-1]
            + pad[1:-1, 2:] + pad[2:, :-2] + pad[2:, 1:-1] + pad[2:, 2:]) / 9
    soft = np.pad(soft, 1)  # zero border: rays leaving the image land on background
    r_max = np.sqrt(dx * dx + dy * dy).max() + 2
    rs = np.arange(0, r_max, 0.25)
    th = np.arange(_N_RAYS) * 2 * np.pi / _N_RAYS
    vals = _bilinear(soft, cx + 2 + np.cos(th)[:, None] * rs, cy + 2 + np.sin(th)[:, None] * rs)
    inside = vals >= 0.5
    last = np.where(inside.any(1), len(rs) - 1 - np.argmax(inside[:, ::-1], 1), 0)
    rho = rs[last] / r_eq
    spec = np.abs(np.fft.rfft(rho))[1:_N_HARM + 1] / (rho.mean() * _N_RAYS)
    solidity = area / _convex_hull_area(mask)
    return np.concatenate([
        [solidity, ev[0] / ev[1], (ev[0] + ev[1]) / r_eq**2, skew,
         rho.mean(), rho.std(), rho.min(), rho.max(), float(_bilinear(soft, cx + 2, cy + 2) >= 0.5)],
        spec,
    ]).astype(np.float32)


# ---------------------------------------------------------------- shape classifier

_MODEL: dict[str, np.ndarray] | None = None


def expand_features(f: np.ndarray) -> np.ndarray:
    # Pairwise products give a linear softmax enough capacity for the few curved boundaries.
    iu = np.triu_indices(f.shape[1])
    return np.concatenate([f, (f[:, :, None] * f[:, None, :])[:, iu[0], iu[1]]], 1)


def classifier() -> dict[str, np.ndarray]:
    """The fitted shape classifier (``shape_classifier.npz``, loaded once)."""
    global _MODEL
    if _MODEL is None:
        if not CLASSIFIER_PATH.exists():
            raise FileNotFoundError(f"the oracle's shape classifier {CLASSIFIER_PATH} is missing; "
                                    "reinstall freeprompt, or refit it with python -m lab.fit_shape_classifier")
        with np.load(CLASSIFIER_PATH) as z:
            model = {k: z[k] for k in z.files}
        if tuple(model["shapes"].tolist()) != SHAPES:
            raise ValueError(f"{CLASSIFIER_PATH.name} was fitted for the shapes {model['shapes'].tolist()}, not "
                             f"{list(SHAPES)}; refit it with python -m lab.fit_shape_classifier")
        _MODEL = model
    return _MODEL


def shape_probs(mask: np.ndarray) -> dict[str, float] | None:
    """Classifier probabilities per shape (None if the mask is empty or too small); a low maximum
    flags a blob that is no shape in particular."""
    f = shape_features(mask)
    if f is None:
        return None
    m = classifier()
    z = expand_features(((f.astype(np.float64) - m["mu"]) / m["sd"])[None])
    logits = (((z - m["mu2"]) / m["sd2"]) @ m["W"] + m["b"])[0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return {str(k): float(v) for k, v in zip(m["shapes"], p)}


def classify_shape(mask: np.ndarray) -> str | None:
    """Most likely shape name of a binary mask (None if empty or too small to tell)."""
    p = shape_probs(mask)
    return None if p is None else max(p, key=p.get)


# ---------------------------------------------------------------- main entry

@dataclass
class Reading:
    color: str | None
    shape: str | None
    mask: np.ndarray
    bbox: tuple[int, int, int, int] | None


def read(image: np.ndarray, color: str | None = None) -> Reading:
    """Read the object of `color` if given, else the largest non-background object."""
    if color is not None:
        mask = color_mask(image, color)
        col = color if mask.any() else None
    else:
        mask = largest_component(object_mask(image))
        col = dominant_color(image, mask)
    shape = classify_shape(mask) if mask.any() else None
    return Reading(col, shape, mask, bbox(mask))
