"""LPIPS (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018) on
torch alone: the ``lpips`` package needs torchvision, which would replace a CPU torch with a CUDA one.

The distance of two images x, y (RGB in [-1, 1]): both are shifted and scaled per channel (``SHIFT``, ``SCALE``), fed
through a backbone, and at each tapped layer l the features are unit-normalised along the channels; the squared
difference is weighted per channel by the layer's linear head w_l (non-negative, learnt by LPIPS) and averaged over
the layer's positions:

    LPIPS(x, y) = sum_l mean_{h,w} sum_c w_lc (f_lhwc(x) / |f_lhw(x)| - f_lhwc(y) / |f_lhw(y)|)^2

Backbones, written from their papers in the layout torchvision's weight files use (so those files load as they are):

- ``alex``: AlexNet as in Krizhevsky's "One weird trick" (64-192-384-256-256 channels), tapped after the ReLU of
  each of its five convolutions;
- ``squeeze``: SqueezeNet 1.1 (Iandola et al., the 1.1 revision: a 3x3 stride-2 first convolution of 64 channels,
  then 8 Fire modules, max-pooling after the first convolution and after Fire 2 and 4), tapped after the first
  ReLU, after Fire 2, 4, 5, 6, 7 and 8.

Weights are read, never downloaded, from files the user has (``weight_files``): in ``$FREEPROMPT_CACHE/lpips``
(else ``~/.cache/freeprompt/lpips``) or torch's hub cache (``$TORCH_HOME/hub/checkpoints``, else
``~/.cache/torch/hub/checkpoints``): the backbone's ImageNet file as torchvision saves it (``alexnet-*.pth``,
``squeezenet1_1-*.pth``) and LPIPS's linear heads (``alex.pth``, ``squeeze.pth``: the v0.1 files inside the ``lpips``
wheel, ``lpips/weights/v0.1/``; also found in an installed ``lpips`` package).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import first_line

NETS = ("alex", "squeeze")
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
MIN_SIDE = 32  # smaller images vanish in AlexNet's pooling
BACKBONE_FILES = {"alex": "alexnet-*.pth", "squeeze": "squeezenet1_1-*.pth"}
EXAMPLE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "squeeze": "squeezenet1_1-b8a52dc0.pth"}
# (index in ``features``, in, out, kernel, stride, padding) of AlexNet's convolutions; taps after 1, 4, 7, 9, 11
ALEX_CONVS = ((0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1), (8, 384, 256, 3, 1, 1),
              (10, 256, 256, 3, 1, 1))
# SqueezeNet 1.1's Fire modules: (index in ``features``, in, squeeze, expand 1x1, expand 3x3)
FIRES = ((3, 64, 16, 64, 64), (4, 128, 16, 64, 64), (6, 128, 32, 128, 128), (7, 256, 32, 128, 128),
         (9, 256, 48, 192, 192), (10, 384, 48, 192, 192), (11, 384, 64, 256, 256), (12, 512, 64, 256, 256))


class Fire(nn.Module):
    """SqueezeNet's module: a 1x1 squeeze convolution, then 1x1 and 3x3 expansions side by side, each with a ReLU."""

    def __init__(self, inputs: int, squeeze: int, expand1: int, expand3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(inputs, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


def backbone(net: str) -> tuple[nn.Sequential, tuple[int, ...], tuple[int, ...]]:
    """(the ``features`` stack, the indices after which LPIPS taps it, the channels of each tap)."""
    if net == "alex":
        layers: dict[int, nn.Module] = {}
        for index, inputs, out, kernel, stride, padding in ALEX_CONVS:
            layers[index] = nn.Conv2d(inputs, out, kernel, stride, padding)
            layers[index + 1] = nn.ReLU()
        for index in (2, 5, 12):
            layers[index] = nn.MaxPool2d(3, 2)
        return nn.Sequential(*(layers[i] for i in range(13))), (1, 4, 7, 9, 11), (64, 192, 384, 256, 256)
    if net == "squeeze":
        layers = {0: nn.Conv2d(3, 64, 3, 2), 1: nn.ReLU()}
        for index in (2, 5, 8):
            layers[index] = nn.MaxPool2d(3, 2, ceil_mode=True)
        for index, *sizes in FIRES:
            layers[index] = Fire(*sizes)
        return (nn.Sequential(*(layers[i] for i in range(13))), (1, 4, 7, 9, 10, 11, 12),
                (64, 128, 256, 384, 384, 512, 512))
    raise ValueError(f"unknown LPIPS network {net!r}")


class Lpips(nn.Module):
    """LPIPS with one backbone (``alex`` or ``squeeze``); random weights until ``load`` is called."""

    def __init__(self, net: str):
        super().__init__()
        self.net = net
        self.features, self.taps, channels = backbone(net)
        self.heads = nn.ParameterList([nn.Parameter(torch.rand(c)) for c in channels])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def load(self, backbone_state: dict, head_state: dict) -> Lpips:
        """Weights from torchvision's file (``features.*``; the classifier is ignored) and LPIPS's heads
        (``lin<k>.model.1.weight``, each 1xCx1x1, in tap order)."""
        own = {k.removeprefix("features."): v for k, v in backbone_state.items() if k.startswith("features.")}
        self.features.load_state_dict(own)
        heads = [head_state[f"lin{k}.model.1.weight"] for k in range(len(self.heads))]
        for param, value in zip(self.heads, heads):
            param.data.copy_(value.reshape(-1))
        return self

    def tapped(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], (x - self.shift) / self.scale
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in self.taps:
                out.append(h)
            if index == self.taps[-1]:
                break
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per image of the batch: the LPIPS distance of ``x`` and ``y`` (Nx3xHxW in [-1, 1])."""
        total = torch.zeros(x.shape[0])
        for fx, fy, w in zip(self.tapped(x), self.tapped(y), self.heads):
            nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + ((nx - ny).pow(2) * w.view(1, -1, 1, 1)).sum(1).mean(dim=(1, 2))
        return total


def cache_folders() -> list[Path]:
    """Where weight files are looked for: freeprompt's LPIPS folder, then torch's hub checkpoints."""
    own = Path(os.environ.get("FREEPROMPT_CACHE") or Path("~/.cache/freeprompt").expanduser()) / "lpips"
    torch_home = Path(os.environ.get("TORCH_HOME") or Path("~/.cache/torch").expanduser())
    return [own, torch_home / "hub" / "checkpoints"]


def _lpips_package_heads() -> Path | None:
    """The v0.1 heads folder of an installed ``lpips`` package, found without importing it (it imports
    torchvision)."""
    from importlib.util import find_spec

    try:
        spec = find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1"


def weight_files(net: str) -> tuple[Path | None, Path | None]:
    """(the backbone's file, the heads' file) of ``net`` found in ``cache_folders``; None for each one missing."""
    folders = cache_folders()
    found = [sorted(f.glob(BACKBONE_FILES[net])) for f in folders if f.is_dir()]
    backbone_file = next((files[0] for files in found if files), None)
    package = _lpips_package_heads()
    heads = [f / f"{net}.pth" for f in folders[:1] + ([package] if package else [])]
    return backbone_file, next((h for h in heads if h.is_file()), None)


def missing_note(net: str) -> str | None:
    """None when ``net``'s weights load, else one line: which files are missing (or unreadable) and where to put
    them."""
    loaded = load(net)
    return loaded if isinstance(loaded, str) else None


def cached(net: str) -> Lpips | None:
    loaded = load(net)
    return None if isinstance(loaded, str) else loaded


@lru_cache(maxsize=4)
def load(net: str) -> Lpips | str:
    """The LPIPS network ``net`` with the user's weights, or the one-line note of why it cannot be had."""
    backbone_file, head_file = weight_files(net)
    folder = cache_folders()[0]
    if backbone_file is None or head_file is None:
        files = [name for name, found in ((EXAMPLE_FILES[net], backbone_file), (f"LPIPS's {net}.pth", head_file))
                 if found is None]
        return (f"LPIPS left out: its {net} weights are missing (put {' and '.join(files)} in {folder}; the README "
                "says where they come from)")
    try:
        state = torch.load(backbone_file, map_location="cpu", weights_only=True)
        heads = torch.load(head_file, map_location="cpu", weights_only=True)
        return Lpips(net).load(state, heads)
    except Exception as err:  # noqa: BLE001 - damaged or foreign files: the metric is left out with the reason
        return f"LPIPS left out: its {net} weights in {backbone_file.parent} cannot be read ({first_line(err)})"
