"""Editing: every method on generated images (``generated``) and real images (``real``: image input, inversions,
their cache). Names load on first use; ``methods`` imports no torch.

    methods     the editing methods and their declared options
    generated   edit(): source + targets from one noise, edited by a method
    images      load_image / prepare_image: any photo to RGB at the model's size; image_to_latents
    inversion   DDIM, null-text, negative-prompt and direct inversion, and the hooks that make a batch follow one
    cache       InversionCache: inversions on disk, atomic and verified
    real        edit_real(): invert (or load from the cache), then edit()
"""

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .cache import InversionCache
    from .generated import EditResult, edit
    from .images import load_image, prepare_image
    from .inversion import INVERSIONS, InversionResult, invert
    from .real import edit_real

_WHERE = {
    "cache": ["InversionCache"],
    "generated": ["EditResult", "edit"],
    "images": ["load_image", "prepare_image"],
    "inversion": ["INVERSIONS", "InversionResult", "invert"],
    "real": ["edit_real"],
}
__all__ = sorted(name for names in _WHERE.values() for name in names)
__getattr__, __dir__ = exports(__name__, {name: module for module, names in _WHERE.items() for name in names})
