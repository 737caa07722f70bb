"""Help texts and defaults of the options several commands share."""

from ..models.loading import DEFAULT_MODEL

MODEL_HELP = "hub id, local diffusers folder, .safetensors file, or 'shapes' (the bundled fixture)"
CONFIG_HELP = "diffusers folder or hub id with the config of a single-file model"
REVISION_HELP = "hub revision (branch, tag or commit)"

__all__ = ["CONFIG_HELP", "DEFAULT_MODEL", "MODEL_HELP", "REVISION_HELP"]
