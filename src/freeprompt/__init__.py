"""freeprompt: Free-Prompt-Editing and attention analysis for Stable Diffusion models loaded with diffusers.

    from freeprompt import edit
    result = edit(pipe, "a red car", ["a blue car"], seed=0)   # pipe: any SD1.x/2.x StableDiffusionPipeline
    result.targets[0].save("blue.png")
"""

from .attention import StepRange, discover_layers
from .editing import EditResult, edit, edit_real
from .errors import BadInput, FreepromptError, ModelLoadError
from .models.loading import load_pipeline

__version__ = "0.1.0"

__all__ = ["BadInput", "EditResult", "FreepromptError", "ModelLoadError", "StepRange", "discover_layers", "edit",
           "edit_real", "load_pipeline", "__version__"]
