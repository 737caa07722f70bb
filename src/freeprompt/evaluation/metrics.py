"""Edit metrics, each usable on its own. Images are PIL images or HxWx3 uint8 arrays; masks are HxW booleans (True:
the edited region).

- ``ClipScorer``: CLIP score (CS: 100 x the cosine of image and text embeddings, clamped at 0, as torchmetrics'
  ``CLIPScore`` that PIE-Bench reports), CLIP directional similarity (CDS: the cosine between the change of the
  image embedding and the change of the text embedding, Gal et al. / InstructPix2Pix), and CS of the edited region
  (the image outside the mask set to black, as PIE-Bench). Any ``CLIPModel`` loads by hub id or path.
- ``StructureDistance``: PIE-Bench's structure distance (Tumanyan et al.): the mean squared difference of the
  cosine self-similarity of the last layer's keys of a DINO ViT, source against edit.
- ``psnr``, ``mse``, ``ssim``: background preservation, computed outside the edit mask (inside only: ``region``).
- ``lpips_distance``: LPIPS when the optional ``lpips`` package and its weights are installed; otherwise None and
  a one-line note (``LPIPS_NOTE``), never an error.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import BadInput, ModelLoadError
from ..models.clip import load_pretrained, shapes_clip

DEFAULT_CLIP = "openai/clip-vit-large-patch14"  # PIE-Bench's CLIP
DEFAULT_DINO = "facebook/dino-vitb8"  # PIE-Bench's structure distance (DINO ViT-B/8)
LPIPS_NOTE = "LPIPS left out: the optional 'lpips' package (and its VGG/AlexNet weights) is not installed"


def as_array(image) -> np.ndarray:
    """HxWx3 uint8 from a PIL image or an array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise BadInput(f"an image must be HxWx3 uint8, got {array.shape} {array.dtype}", "pass a PIL image")
    return array


def _region(a, b, mask, region: str):
    a, b = as_array(a).astype(np.float64), as_array(b).astype(np.float64)
    if a.shape != b.shape:
        raise BadInput(f"images of different sizes {a.shape} and {b.shape}", "compare images of one size")
    if mask is None:
        return a, b, np.ones(a.shape[:2], bool)
    mask = np.asarray(mask, bool)
    if mask.shape != a.shape[:2]:
        raise BadInput(f"the mask is {mask.shape}, the images {a.shape[:2]}", "give a mask of the image's size")
    keep = ~mask if region == "outside" else mask
    return a, b, keep


def mse(a, b, mask=None, region: str = "outside") -> float:
    """Mean squared error in [0, 1] units over the pixels outside (or inside) ``mask``; nan if there are none."""
    a, b, keep = _region(a, b, mask, region)
    if not keep.any():
        return float("nan")
    return float((((a - b) / 255.0) ** 2)[keep].mean())


def psnr(a, b, mask=None, region: str = "outside") -> float:
    """PSNR in dB over the pixels outside (or inside) ``mask``; inf for identical pixels, nan if there are none."""
    error = mse(a, b, mask, region)
    if math.isnan(error):
        return error
    return float("inf") if error == 0 else float(10 * math.log10(1.0 / error))


def ssim(a, b, mask=None, region: str = "outside", sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al.: Gaussian window sigma 1.5, K1 0.01, K2 0.03, on [0, 1] values, channels
    averaged), averaged over the pixels outside (or inside) ``mask``; nan if there are none."""
    a, b, keep = _region(a, b, mask, region)
    if not keep.any():
        return float("nan")
    x = torch.from_numpy(a / 255.0).permute(2, 0, 1)[:, None]
    y = torch.from_numpy(b / 255.0).permute(2, 0, 1)[:, None]
    radius = int(3.5 * sigma + 0.5)
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    k = (k / k.sum())[None, None]

    def blur(t):
        t = F.conv2d(F.pad(t, (radius, radius, 0, 0), mode="reflect"), k[:, :, None, :])
        return F.conv2d(F.pad(t, (0, 0, radius, radius), mode="reflect"), k[:, :, :, None])

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(value.mean(0)[0].numpy()[keep].mean())


class ClipScorer:
    """CLIP score, directional similarity and region score with one ``CLIPModel``: a hub id, a path, ``shapes``
    (the small CLIP trained on the shapes world that ships with freeprompt), or a model with its processor."""

    def __init__(self, model=DEFAULT_CLIP, processor=None, device: str = "cpu"):
        from transformers import CLIPModel, CLIPProcessor

        if model == "shapes":
            model, processor = shapes_clip()
        elif isinstance(model, str):
            model, processor = load_pretrained(CLIPModel, model), processor or load_pretrained(CLIPProcessor, model)
        self.model, self.processor, self.device = model.to(device).eval(), processor, device

    @torch.no_grad()
    def image_embeddings(self, images) -> torch.Tensor:
        pixels = self.processor(images=[Image.fromarray(as_array(i)) for i in images], return_tensors="pt")
        features = self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device))
        return F.normalize(_tensor(features).float(), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts) -> torch.Tensor:
        tokens = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True)
        features = self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()})
        return F.normalize(_tensor(features).float(), dim=-1)

    def scores(self, images, texts) -> list[float]:
        """CS: 100 x max(cos(image, text), 0), per pair."""
        cos = (self.image_embeddings(images) * self.text_embeddings(texts)).sum(-1)
        return (100 * cos.clamp_min(0)).tolist()

    def directional(self, sources, edits, source_texts, target_texts) -> list[float]:
        """CDS: cos(E(edit) - E(source), T(target) - T(source)), per item; nan where either change is zero."""
        d_image = self.image_embeddings(edits) - self.image_embeddings(sources)
        d_text = self.text_embeddings(target_texts) - self.text_embeddings(source_texts)
        norm = d_image.norm(dim=-1) * d_text.norm(dim=-1)
        cos = (d_image * d_text).sum(-1) / norm.clamp_min(1e-12)
        return [float("nan") if n < 1e-12 else float(c) for c, n in zip(cos, norm)]

    def region_scores(self, images, texts, masks) -> list[float]:
        """CS of each image with everything outside its mask black (PIE-Bench's "edited" CLIP similarity)."""
        masked = [as_array(i) * np.asarray(m, bool)[..., None] for i, m in zip(images, masks)]
        return self.scores([m.astype(np.uint8) for m in masked], texts)


class StructureDistance:
    """PIE-Bench's structure distance: MSE between the cosine self-similarity matrices of the last ViT layer's keys
    (all tokens, CLS included) of two images, at the backbone's input size."""

    def __init__(self, model=DEFAULT_DINO, processor=None, device: str = "cpu"):
        from transformers import AutoImageProcessor, ViTModel

        if isinstance(model, str):
            name = model
            model, processor = load_pretrained(ViTModel, name), processor or load_pretrained(AutoImageProcessor, name)
        self.model, self.processor, self.device = model.to(device).eval(), processor, device

    @torch.no_grad()
    def self_similarity(self, images) -> torch.Tensor:
        keys = []
        handle = _last_key_projection(self.model).register_forward_hook(lambda mod, args, out: keys.append(out))
        try:
            pixels = self.processor(images=[Image.fromarray(as_array(i)) for i in images], return_tensors="pt")
            self.model(pixel_values=pixels["pixel_values"].to(self.device))
        finally:
            handle.remove()
        k = F.normalize(keys[0].float(), dim=-1)
        return k @ k.transpose(1, 2)

    def distances(self, sources, edits) -> list[float]:
        a, b = self.self_similarity(sources), self.self_similarity(edits)
        return ((a - b) ** 2).mean(dim=(1, 2)).tolist()


def _last_key_projection(model) -> torch.nn.Module:
    """The key projection of a ViT's last attention layer (``attention.attention.key`` in transformers 4,
    ``attention.k_proj`` in 5)."""
    found = [m for name, m in model.named_modules() if name.endswith(("attention.key", "attention.k_proj"))]
    if not found:
        raise ModelLoadError(f"{type(model).__name__} has no attention key projections", "give a ViT (e.g. DINO)")
    return found[-1]


def lpips_distance(a, b, mask=None, region: str = "outside") -> float | None:
    """LPIPS (AlexNet) of the two images with the other region blacked out, or None when the optional ``lpips``
    package or its weights are missing (see ``LPIPS_NOTE``)."""
    net = _lpips()
    if net is None:
        return None
    x, y, keep = _region(a, b, mask, region)
    keep = torch.from_numpy(keep)[None, None]
    tx = torch.from_numpy(x / 127.5 - 1).permute(2, 0, 1)[None].float() * keep
    ty = torch.from_numpy(y / 127.5 - 1).permute(2, 0, 1)[None].float() * keep
    with torch.no_grad():
        return float(net(tx, ty).mean())


@lru_cache(maxsize=1)
def _lpips():
    try:
        import lpips

        return lpips.LPIPS(net="alex", verbose=False)
    except Exception:  # noqa: BLE001 - missing package or weights: the metric is left out
        return None


def _tensor(features):
    """transformers 5 may return a model output instead of a tensor from get_*_features."""
    return features if isinstance(features, torch.Tensor) else features.pooler_output


