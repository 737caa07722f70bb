"""Edit metrics, each usable on its own. Images are PIL images or HxWx3 uint8 arrays; masks are HxW booleans (True:
the edited region).

- ``ClipScorer``: CLIP score (CS: 100 x the cosine of image and text embeddings, clamped at 0, as torchmetrics'
  ``CLIPScore`` that PIE-Bench reports), CLIP directional similarity (CDS: the cosine between the change of the
  image embedding and the change of the text embedding, Gal et al. / InstructPix2Pix), and CS of the edited region
  (the image outside the mask set to black, as PIE-Bench). Any ``CLIPModel`` loads by hub id or path.
- ``StructureDistance``: PIE-Bench's structure distance (Tumanyan et al.): the mean squared difference of the
  cosine self-similarity of the last layer's keys of a DINO ViT, source against edit.
- ``psnr``, ``mse``, ``ssim``: background preservation, computed outside the edit mask (inside only: ``region``).
- ``lpips_distance``: LPIPS (``perceptual``) when its network's weights are in the user's cache; otherwise None
  and a one-line note (``lpips_note``), never an error.

Two protocols (``PROTOCOLS``) define the background metrics and the structure distance's input:

- ``pie-bench`` reproduces PIE-Bench's released evaluation (Ju et al., ICLR 2024), quirks included: the pixels
  inside the edit mask are set to 0 in both images and MSE, PSNR and SSIM are averaged over all pixels (so PSNR is
  the kept pixels' PSNR minus 10 log10 of the kept fraction, and the zeroed region counts as SSIM 1); SSIM's
  windows stay inside the image; LPIPS uses SqueezeNet with the masked pixels black; the structure distance's
  ViT sees 0-255 values through the ImageNet normalisation meant for 0-1 values.
- ``clean``: the definitions a newcomer expects: MSE and PSNR over the kept pixels only, the SSIM map averaged over
  the kept pixels, LPIPS with AlexNet and the masked pixels grey, the ViT fed 0-1 values.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import BadInput, ModelLoadError
from ..models.clip import load_pretrained, shapes_clip

DEFAULT_CLIP = "openai/clip-vit-large-patch14"  # PIE-Bench's CLIP
DEFAULT_DINO = "facebook/dino-vitb8"  # PIE-Bench's structure distance (DINO ViT-B/8)
PROTOCOLS = ("pie-bench", "clean")
LPIPS_NETS = {"pie-bench": "squeeze", "clean": "alex"}  # the network each protocol's LPIPS uses
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03  # Wang et al. 2004


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


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise BadInput(f"unknown protocol {protocol!r}", f"use one of {', '.join(PROTOCOLS)}")
    return protocol


def mse(a, b, mask=None, region: str = "outside", protocol: str = "clean") -> float:
    """Mean squared error of [0, 1] values. ``clean``: over the kept pixels (outside, or inside, ``mask``), nan if
    there are none; ``pie-bench``: the other pixels set to 0 in both images, over all pixels (so ``f`` x the clean
    value, ``f`` the kept fraction)."""
    a, b, keep = _region(a, b, mask, region)
    if check_protocol(protocol) == "pie-bench":
        return float((((a - b) * keep[..., None] / 255.0) ** 2).mean())
    if not keep.any():
        return float("nan")
    return float((((a - b) / 255.0) ** 2)[keep].mean())


def psnr(a, b, mask=None, region: str = "outside", protocol: str = "clean") -> float:
    """10 log10(1 / ``mse``) in dB (peak 1 on [0, 1] values): inf for no difference, nan if ``mse`` is nan. Under
    ``pie-bench`` this is the clean value minus 10 log10(f), ``f`` the kept fraction."""
    error = mse(a, b, mask, region, protocol)
    if math.isnan(error):
        return error
    return float("inf") if error == 0 else float(10 * math.log10(1.0 / error))


def ssim(a, b, mask=None, region: str = "outside", protocol: str = "clean") -> float:
    """Structural similarity (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, on [0, 1]
    values with data range 1, each channel on its own, channels averaged). ``pie-bench``: the other pixels set to 0
    in both images, the map over every window that fits inside the image (no padding) averaged whole;
    ``clean``: the map at every pixel (the image mirrored at its border, without repeating the edge pixel) averaged
    over the kept pixels, nan if there are none."""
    a, b, keep = _region(a, b, mask, region)
    if check_protocol(protocol) == "pie-bench":
        a, b = a * keep[..., None], b * keep[..., None]
        return float(ssim_map(a / 255.0, b / 255.0, pad=False).mean())
    if not keep.any():
        return float("nan")
    return float(ssim_map(a / 255.0, b / 255.0, pad=True).mean(-1)[keep].mean())


def ssim_map(x: np.ndarray, y: np.ndarray, pad: bool) -> np.ndarray:
    """The SSIM map of two HxWxC arrays of [0, 1] values: (H-10)x(W-10)xC without padding, HxWxC with the images
    mirrored at their border."""
    if min(x.shape[:2]) < SSIM_WINDOW:
        raise BadInput(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {x.shape[1]}x"
                       f"{x.shape[0]}", "compare larger images")
    radius = SSIM_WINDOW // 2
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / SSIM_SIGMA) ** 2)
    k = (k / k.sum())[None, None]

    def blur(t):
        if pad:
            t = F.pad(t, (radius, radius, radius, radius), mode="reflect")
        return F.conv2d(F.conv2d(t, k[:, :, None, :]), k[:, :, :, None])

    tx = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[:, None]
    ty = torch.from_numpy(np.ascontiguousarray(y)).permute(2, 0, 1)[:, None]
    mx, my = blur(tx), blur(ty)
    vx, vy, cxy = blur(tx * tx) - mx**2, blur(ty * ty) - my**2, blur(tx * ty) - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    value = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return value[:, 0].permute(1, 2, 0).numpy()


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
    def self_similarity(self, images, protocol: str = "clean") -> torch.Tensor:
        """The keys' cosine self-similarity per image. The processor resizes and normalises with ImageNet's mean
        and deviation of 0-1 values; under ``pie-bench`` it is given the 0-255 values unscaled, as PIE-Bench's
        published numbers were computed."""
        keys = []
        rescale = check_protocol(protocol) == "clean"
        handle = _last_key_projection(self.model).register_forward_hook(lambda mod, args, out: keys.append(out))
        try:
            pixels = self.processor(images=[Image.fromarray(as_array(i)) for i in images], return_tensors="pt",
                                    do_rescale=rescale)
            self.model(pixel_values=pixels["pixel_values"].to(self.device))
        finally:
            handle.remove()
        k = F.normalize(keys[0].float(), dim=-1)
        return k @ k.transpose(1, 2)

    def distances(self, sources, edits, protocol: str = "clean") -> list[float]:
        a, b = self.self_similarity(sources, protocol), self.self_similarity(edits, protocol)
        return ((a - b) ** 2).mean(dim=(1, 2)).tolist()


def _last_key_projection(model) -> torch.nn.Module:
    """The key projection of a ViT's last attention layer (``attention.attention.key`` in transformers 4,
    ``attention.k_proj`` in 5)."""
    found = [m for name, m in model.named_modules() if name.endswith(("attention.key", "attention.k_proj"))]
    if not found:
        raise ModelLoadError(f"{type(model).__name__} has no attention key projections", "give a ViT (e.g. DINO)")
    return found[-1]


def lpips_distance(a, b, mask=None, region: str = "outside", protocol: str = "clean") -> float | None:
    """LPIPS (Zhang et al. 2018) of the two images with the other region filled in both: ``pie-bench``: SqueezeNet,
    filled black, averaged over the whole image; ``clean``: AlexNet, filled grey, nan if nothing is kept. None when
    the network's weights are not in the user's cache (``lpips_note`` says which files are missing)."""
    from . import perceptual

    net = perceptual.cached(LPIPS_NETS[check_protocol(protocol)])
    if net is None:
        return None
    x, y, keep = _region(a, b, mask, region)
    if protocol == "clean" and not keep.any():
        return float("nan")
    if min(x.shape[:2]) < perceptual.MIN_SIDE:
        return float("nan")
    fill = -1.0 if protocol == "pie-bench" else 0.0
    keep = torch.from_numpy(keep)[None, None]
    tx = torch.from_numpy(x / 127.5 - 1).permute(2, 0, 1)[None].float().where(keep, torch.tensor(fill))
    ty = torch.from_numpy(y / 127.5 - 1).permute(2, 0, 1)[None].float().where(keep, torch.tensor(fill))
    with torch.no_grad():
        return float(net(tx, ty)[0])


def lpips_note(protocol: str = "clean") -> str | None:
    """None when ``protocol``'s LPIPS network can run, else the one-line note saying which weights are missing."""
    from . import perceptual

    return perceptual.missing_note(LPIPS_NETS[check_protocol(protocol)])


def _tensor(features):
    """transformers 5 may return a model output instead of a tensor from get_*_features."""
    return features if isinstance(features, torch.Tensor) else features.pooler_output


