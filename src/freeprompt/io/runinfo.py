"""What a run records about its environment, so a result can be reproduced from its folder."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

PACKAGES = ("freeprompt", "torch", "diffusers", "transformers", "accelerate", "safetensors", "numpy", "Pillow")


def package_versions() -> dict[str, str | None]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: str) -> str:
    """The accelerator's name, or the CPU and its core count, for run.json and benchmark reports."""
    import os

    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_model()} CPU, {os.cpu_count()} cores"
