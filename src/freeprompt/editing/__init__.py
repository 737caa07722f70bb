"""Editing: FPE on generated images (``generated``), real images (``real``: image input, inversions, their cache).

    generated   edit(): source + targets from one noise, targets on the source's self-attention maps
    images      load_image / prepare_image: any photo to RGB at the model's size; image_to_latents
    inversion   DDIM, null-text, negative-prompt and direct inversion, and the hooks that make a batch follow one
    cache       InversionCache: inversions on disk, atomic and verified
    real        edit_real(): invert (or load from the cache), then edit()
"""

from .cache import InversionCache
from .generated import EditResult, edit
from .images import load_image, prepare_image
from .inversion import METHODS, InversionResult, invert
from .real import edit_real

__all__ = ["EditResult", "InversionCache", "InversionResult", "METHODS", "edit", "edit_real", "invert", "load_image",
           "prepare_image"]
