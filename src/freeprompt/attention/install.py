"""Installing an ``EditControl`` on a UNet for one sampling run, in the spirit of DAAM's ``trace``: inside the
block every edited or watched attention layer has a ``LayerProcessor`` with the control attached (through diffusers'
``set_attn_processor``, shared with any recording running at the same time) and every feature injection a forward
hook; on exit, also after an error, the original processors come back and the hooks are removed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..errors import BadInput
from .control import EditControl
from .layers import LayerRegistry
from .processors import attached
from .rules import FeatureRule


@contextmanager
def controlled(unet, registry: LayerRegistry, control: EditControl) -> Iterator[EditControl]:
    """Run ``control``'s edits while the block runs (pass the control to ``sample`` as a hook)."""
    layers = [registry.by_name(name) for name in sorted(control.layer_names)]
    modules = [(feature, feature_module(unet, feature.module)) for feature in control.features]
    handles = []
    try:
        with attached(unet, layers, control=control):
            handles = [module.register_forward_hook(_injector(control, feature)) for feature, module in modules]
            yield control
    finally:
        for handle in handles:
            handle.remove()
        control.end()


def feature_module(unet, path: str) -> torch.nn.Module:
    """The UNet submodule at ``path``, or a one-line error naming the path."""
    try:
        return unet.get_submodule(path)
    except AttributeError:
        raise BadInput(f"the denoising network has no module {path!r}",
                       "give a module path such as up_blocks.1.resnets.1 (a transformer: transformer_blocks.3.ff)"
                       ) from None


def _injector(control: EditControl, feature: FeatureRule):
    def hook(module, args, output):
        return control.inject(feature, output)

    return hook
