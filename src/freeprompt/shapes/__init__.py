"""Synthetic shapes world (renderer with ground truth) and an oracle that reads images back."""

from .oracle import Reading, classify_shape, color_mask, dominant_color, mask_iou, object_mask, read, shape_probs
from .world import (
                     COLORS,
                     SCENES,
                     SHAPES,
                     TEMPLATES,
                     ObjectSpec,
                     ObjectTruth,
                     Sample,
                     SceneSpec,
                     background,
                     caption,
                     random_sample,
                     render,
                     sample_spec,
)

__all__ = [
    "COLORS", "SHAPES", "SCENES", "TEMPLATES", "ObjectSpec", "SceneSpec", "ObjectTruth", "Sample",
    "sample_spec", "render", "random_sample", "background", "caption",
    "Reading", "read", "color_mask", "object_mask", "dominant_color", "classify_shape", "shape_probs",
    "mask_iou",
]
