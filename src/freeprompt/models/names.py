"""Model names every command shares: the default model and the aliases of the fixtures shipped with the package.

The default is the bundled shapes fixture, so that every command runs offline as installed; ``$FREEPROMPT_MODEL``
(a hub id, a folder or a file) makes another model every command's default."""

from __future__ import annotations

import os

FIXTURES = ("shapes", "shapes-mmdit")  # the U-Net fixture (SD1.x layout) and the MM-DiT one (SD3 layout)
PAPER_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the paper's model (SD 1.5)
DEFAULT_MODEL = os.environ.get("FREEPROMPT_MODEL") or "shapes"
