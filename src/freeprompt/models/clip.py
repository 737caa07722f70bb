"""Loading a CLIP model (a ``transformers.CLIPModel`` and its processor): by hub id or path, or ``shapes``, the small
CLIP trained on the shapes world that ships with freeprompt (``fixtures/shapes_clip``, offline). Used by the
evaluation's CLIP metrics and by the caption ranking of photos given without a caption (``editing/caption.py``)."""

from __future__ import annotations

from ..errors import ModelLoadError, first_line

SHAPES_CLIP = "shapes"


def load_clip(name: str = SHAPES_CLIP):
    """(model, processor) of the CLIP ``name``: ``shapes``, a hub id or a local folder; a one-line
    ``ModelLoadError`` when it cannot load (missing, offline, corrupt)."""
    if name == SHAPES_CLIP:
        return shapes_clip()
    from transformers import CLIPModel, CLIPProcessor

    return load_pretrained(CLIPModel, name), load_pretrained(CLIPProcessor, name)


def shapes_clip():
    """(model, processor) of the CLIP trained on the shapes world (``fixtures/shapes_clip``), offline."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

    from .loading import fixture_path
    from .tokenizer import clip_tokenizer

    folder = fixture_path("shapes_clip")
    if not (folder / "config.json").exists():
        raise ModelLoadError(f"the shapes CLIP is not installed at {folder}", "reinstall freeprompt from a checkout")
    model = CLIPModel.from_pretrained(str(folder))
    processor = CLIPProcessor(image_processor=CLIPImageProcessor.from_pretrained(str(folder)),
                              tokenizer=clip_tokenizer())
    return model, processor


def load_pretrained(cls, name: str):
    """``cls.from_pretrained(name)``, or a one-line ``ModelLoadError``."""
    try:
        return cls.from_pretrained(name)
    except Exception as err:  # noqa: BLE001 - missing, offline or corrupt: one line
        raise ModelLoadError(f"cannot load {cls.__name__} {name!r} ({first_line(err)})",
                             "give a local path or download it once with network access") from None


__all__ = ["SHAPES_CLIP", "load_clip", "load_pretrained", "shapes_clip"]
