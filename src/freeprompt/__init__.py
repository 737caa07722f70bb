"""freeprompt: Free-Prompt-Editing and attention analysis for Stable Diffusion models loaded with diffusers.

    from freeprompt import edit
    result = edit(pipe, "a red car", ["a blue car"], seed=0)   # pipe: any SD1.x/2.x/XL diffusers pipeline
    result.targets[0].save("blue.png")

Names load on first use, so ``import freeprompt`` is cheap until a model is touched.
"""

from typing import TYPE_CHECKING

from .lazy import exports

if TYPE_CHECKING:
    from .attention.layers import discover_layers
    from .attention.steps import StepRange
    from .editing.generated import EditResult, edit
    from .editing.real import edit_real
    from .errors import BadInput, FreepromptError, ModelLoadError
    from .models.loading import load_pipeline

__version__ = "0.1.0"

__all__ = ["BadInput", "EditResult", "FreepromptError", "ModelLoadError", "StepRange", "discover_layers", "edit",
           "edit_real", "load_pipeline", "__version__"]

__getattr__, __dir__ = exports(__name__, {
    "StepRange": "attention.steps", "discover_layers": "attention.layers", "EditResult": "editing.generated",
    "edit": "editing.generated", "edit_real": "editing.real", "BadInput": "errors", "FreepromptError": "errors",
    "ModelLoadError": "errors", "load_pipeline": "models.loading",
})
