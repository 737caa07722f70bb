"""Synthetic "shapes world": coloured shapes on simple backgrounds, with captions and ground truth.

Everything is deterministic given a SceneSpec (and a SceneSpec is deterministic given a seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Saturated, mutually well separated (min pairwise RGB distance ~90, also vs. all background colours)
# so that a +-20 per channel shift never changes the nearest colour.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "blue": (30, 70, 220),
    "green": (30, 160, 50),
    "yellow": (245, 225, 30),
    "brown": (125, 70, 25),
    "pink": (250, 130, 200),
    "purple": (140, 50, 190),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
    "orange": (250, 140, 0),
}

# Background colours: not close to any palette colour (mid grey keeps black and white objects visible).
BACKGROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "sky": (135, 185, 220),
    "ground": (90, 118, 100),
}

# No hexagon/pentagon: at ~15 px they are indistinguishable from a circle once blurred.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross", "diamond", "moon")

SCENES: tuple[str, ...] = ("plain", "park")

HORIZON = 0.55  # park: sky above this fraction of the height, ground below

TEMPLATES: dict[str, str] = {
    "simple": "a {color} {shape}",
    "photo": "a photo of a {color} {shape}",
    "big": "a big {color} {shape}",
    "small": "a small {color} {shape}",
    "left": "a {color} {shape} on the left",
    "right": "a {color} {shape} on the right",
    "park": "a {color} {shape} standing in the park",
    "pair": "a {color} {shape} and a {shape2}",
}


@dataclass(frozen=True)
class Layout:
    """What a template implies about the picture."""

    scene: str = "plain"
    size: tuple[float, float] = (0.36, 0.60)  # object extent, fraction of the image side
    x: tuple[float, float] = (0.0, 1.0)  # allowed centre range (further clipped so the object fits)
    y: tuple[float, float] = (0.0, 1.0)
    pair: bool = False


TEMPLATE_LAYOUTS: dict[str, Layout] = {
    "simple": Layout(),
    "photo": Layout(),
    "big": Layout(size=(0.55, 0.65)),
    "small": Layout(size=(0.30, 0.38)),
    "left": Layout(x=(0.0, 0.38)),
    "right": Layout(x=(0.62, 1.0)),
    "park": Layout(scene="park", size=(0.36, 0.52), y=(0.52, 0.76)),
    "pair": Layout(size=(0.28, 0.40), pair=True),
}

# Mixture used when sample_spec(template=None): mostly the simple caption.
TEMPLATE_MIX: dict[str, float] = {
    "simple": 0.50, "photo": 0.06, "big": 0.06, "small": 0.06,
    "left": 0.06, "right": 0.06, "park": 0.10, "pair": 0.10,
}

# Small rotations only: a 45-degree square would read as a diamond, a 45-degree cross as an "x".
MAX_ROTATION: dict[str, float] = {
    "circle": 0.0, "square": 12.0, "triangle": 15.0, "star": 20.0,
    "heart": 15.0, "cross": 12.0, "diamond": 12.0, "moon": 25.0,
}

MARGIN = 0.03  # keep objects this far (fraction of side) from the border


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    color: str
    center: tuple[float, float]  # (x, y) in [0, 1] image coordinates, y down
    size: float  # extent of the unrotated shape, fraction of the image side
    rotation: float  # degrees, counter-clockwise on screen


@dataclass(frozen=True)
class SceneSpec:
    objects: tuple[ObjectSpec, ...]  # objects[0] is the captioned (coloured) object
    scene: str
    template: str
    caption: str


@dataclass
class ObjectTruth:
    shape: str
    color: str
    mask: np.ndarray  # bool HxW, visible pixels (coverage >= 0.5)
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) of the mask


@dataclass
class Sample:
    image: np.ndarray  # uint8 HxWx3
    spec: SceneSpec
    objects: list[ObjectTruth]


def check_word(kind: str, word: str, allowed) -> None:
    """A ValueError naming the allowed words unless ``word`` is one of them."""
    if word not in allowed:
        raise ValueError(f"unknown {kind} {word!r}; allowed: {', '.join(allowed)}")


def _circle(n: int = 48, r: float = 0.5) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _star(points: int = 5, outer: float = 0.5, inner: float = 0.2) -> np.ndarray:
    t = -np.pi / 2 + np.arange(2 * points) * np.pi / points  # first tip points up
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _heart(n: int = 64) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y], 1)


def _moon(R: float = 0.5, r: float = 0.45, d: float = 0.28, n: int = 40) -> np.ndarray:
    # Crescent = outer circle minus a circle shifted right by d; opens to the right like a "C".
    xi = (R * R - r * r + d * d) / (2 * d)
    yi = np.sqrt(R * R - xi * xi)
    a0 = np.arctan2(yi, xi)
    outer = np.linspace(a0, 2 * np.pi - a0, n)
    b0 = np.arctan2(yi, xi - d)
    inner = np.linspace(2 * np.pi - b0, b0, n)[1:-1]
    return np.concatenate([
        np.stack([R * np.cos(outer), R * np.sin(outer)], 1),
        np.stack([d + r * np.cos(inner), r * np.sin(inner)], 1),
    ])


def _cross(w: float = 0.34) -> np.ndarray:
    a, b = w / 2, 0.5
    return np.array([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a),
                     (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)])


def _normalise(p: np.ndarray) -> np.ndarray:
    """Centre the bounding box on the origin and scale the larger side to 1."""
    lo, hi = p.min(0), p.max(0)
    return (p - (lo + hi) / 2) / (hi - lo).max()


# Unit outlines: bbox centred on the origin, larger side 1, y pointing down (screen coordinates).
OUTLINES: dict[str, np.ndarray] = {
    name: _normalise(np.asarray(p, dtype=np.float64)) for name, p in {
        "circle": _circle(),
        "square": [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)],
        "triangle": [(0.0, -0.5), (0.5, 0.5 * np.sqrt(3) - 0.5), (-0.5, 0.5 * np.sqrt(3) - 0.5)],
        "star": _star(),
        "heart": _heart(),
        "cross": _cross(),
        "diamond": [(0.0, -0.5), (0.33, 0.0), (0.0, 0.5), (-0.33, 0.0)],
        "moon": _moon(),
    }.items()
}


def _outline(shape: str, size: float, rotation: float) -> np.ndarray:
    """Outline in image-fraction units, centred on (0, 0)."""
    a = np.deg2rad(rotation)
    c, s = np.cos(a), np.sin(a)
    rot = np.array([[c, s], [-s, c]])  # counter-clockwise on screen (y down)
    return OUTLINES[shape] @ rot.T * size


def _place(rng: np.random.Generator, half_lo, half_hi, xr, yr, box) -> tuple[float, float] | None:
    """Centre within xr/yr such that the whole object lies inside box (x0, x1), with MARGIN."""
    lo_x, hi_x = max(xr[0], box[0] + MARGIN + half_lo[0]), min(xr[1], box[1] - MARGIN - half_hi[0])
    lo_y, hi_y = max(yr[0], MARGIN + half_lo[1]), min(yr[1], 1 - MARGIN - half_hi[1])
    if lo_x > hi_x or lo_y > hi_y:
        return None
    return float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y))


def _sample_object(rng, shape, color, layout: Layout, box=(0.0, 1.0)) -> ObjectSpec:
    # Redraw the size until the (rotated) object fits the allowed centre range; sizes near the
    # lower end always fit, so this terminates quickly.
    for _ in range(100):
        size = float(rng.uniform(*layout.size))
        rot = float(rng.uniform(-1, 1) * MAX_ROTATION[shape])
        p = _outline(shape, size, rot)
        c = _place(rng, -p.min(0), p.max(0), layout.x, layout.y, box)
        if c is not None:
            return ObjectSpec(shape, color, (round(c[0], 4), round(c[1], 4)), round(size, 4), round(rot, 2))
    raise RuntimeError(f"cannot place {shape} for layout {layout}")


def caption(template: str, color: str, shape: str, shape2: str | None = None) -> str:
    check_word("template", template, TEMPLATES)
    check_word("color", color, COLORS)
    check_word("shape", shape, SHAPES)
    if TEMPLATE_LAYOUTS[template].pair:
        if shape2 is None:
            raise ValueError(f"template {template!r} needs shape2")
        check_word("shape", shape2, SHAPES)
    elif shape2 is not None:
        raise ValueError(f"template {template!r} takes no shape2 (got {shape2!r})")
    return TEMPLATES[template].format(color=color, shape=shape, shape2=shape2)


def sample_spec(rng: np.random.Generator, template: str | None = None, color: str | None = None,
                shape: str | None = None) -> SceneSpec:
    names = list(TEMPLATE_MIX)
    # Always draw in the same order so a given seed gives the same scene whatever is fixed.
    t_draw = names[rng.choice(len(names), p=np.array(list(TEMPLATE_MIX.values())))]
    c_draw = list(COLORS)[rng.integers(len(COLORS))]
    s_draw = SHAPES[rng.integers(len(SHAPES))]
    template = t_draw if template is None else template
    color = c_draw if color is None else color
    shape = s_draw if shape is None else shape
    check_word("template", template, TEMPLATES)
    check_word("color", color, COLORS)
    check_word("shape", shape, SHAPES)
    layout = TEMPLATE_LAYOUTS[template]
    if not layout.pair:
        objects = (_sample_object(rng, shape, color, layout),)
        return SceneSpec(objects, layout.scene, template, caption(template, color, shape))
    # Pair: the captioned object on a random side, a different shape in a different, unnamed colour;
    # each object stays inside its half so they never touch.
    shape2 = [s for s in SHAPES if s != shape][rng.integers(len(SHAPES) - 1)]
    color2 = [c for c in COLORS if c != color][rng.integers(len(COLORS) - 1)]
    left_first = bool(rng.integers(2))
    halves = [(0.0, 0.5), (0.5, 1.0)]
    first = _sample_object(rng, shape, color, layout, halves[0 if left_first else 1])
    second = _sample_object(rng, shape2, color2, layout, halves[1 if left_first else 0])
    return SceneSpec((first, second), layout.scene, template, caption(template, color, shape, shape2))


def background(scene: str, size: int) -> np.ndarray:
    check_word("scene", scene, SCENES)
    img = np.empty((size, size, 3), np.uint8)
    if scene == "plain":
        img[:] = BACKGROUND_COLORS["grey"]
    else:
        h = int(round(HORIZON * size))
        img[:h] = BACKGROUND_COLORS["sky"]
        img[h:] = BACKGROUND_COLORS["ground"]
    return img


SUPERSAMPLE = 4


def _coverage(obj: ObjectSpec, size: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] (float32 HxW) by supersampling the polygon."""
    big = size * SUPERSAMPLE
    pts = (_outline(obj.shape, obj.size, obj.rotation) + np.asarray(obj.center)) * big
    layer = Image.new("L", (big, big), 0)
    ImageDraw.Draw(layer).polygon([tuple(p) for p in pts.tolist()], fill=255)
    return np.asarray(layer.reduce(SUPERSAMPLE), dtype=np.float32) / 255.0


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), exclusive ends; None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def render(spec: SceneSpec, size: int = 64) -> Sample:
    img = background(spec.scene, size).astype(np.float32)
    covs = [_coverage(o, size) for o in spec.objects]
    for o, a in zip(spec.objects, covs):
        a = a[..., None]
        img = img * (1 - a) + np.asarray(COLORS[o.color], np.float32) * a
    truths, occluder = [], np.zeros((size, size), bool)
    for o, a in reversed(list(zip(spec.objects, covs))):  # later objects are drawn on top
        m = (a >= 0.5) & ~occluder
        occluder |= m
        truths.append(ObjectTruth(o.shape, o.color, m, bbox(m) or (0, 0, 0, 0)))
    return Sample(np.clip(np.rint(img), 0, 255).astype(np.uint8), spec, truths[::-1])


def random_sample(seed: int, size: int = 64, **kw) -> Sample:
    return render(sample_spec(np.random.default_rng(seed), **kw), size)
