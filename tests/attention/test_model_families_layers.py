"""Stable Diffusion 2.x and SDXL on tiny random configs, the attention floor: SDXL's layers (transformer depth > 1)
in the order attention runs, and the block-level layer spec on SDXL and SD1.x."""

import torch

from freeprompt.attention import discover_layers
from freeprompt.diffusion import encode_prompts
from freeprompt.models.random import random_pipeline


def test_sdxl_layers_in_forward_order_with_blocks():
    pipe = random_pipeline("tiny-sdxl")
    reg = discover_layers(pipe.unet)
    layers = reg.of_kind("self")
    # tiny SDXL: down.1 (2 attentions x depth 1), down.2 (2 x 1), mid (depth 2), up.0 (3 x 2), up.1 (3 x 1)
    assert len(layers) == 17 and [layer.index for layer in layers] == list(range(1, 18))
    assert [(layer.place, layer.block) for layer in layers][:4] == [("down", 1)] * 2 + [("down", 2)] * 2
    calls = []
    hooks = [pipe.unet.get_submodule(layer.name).register_forward_hook(
        lambda mod, args, out, name=layer.name: calls.append(name)) for layer in reg]
    cond = encode_prompts(pipe, ["a cat"], "", False, "cpu", (64, 64))
    try:
        with torch.no_grad():
            pipe.unet(torch.zeros(1, 4, 8, 8), 10, **cond.unet_kwargs())
    finally:
        for h in hooks:
            h.remove()
    assert calls == [layer.name for layer in reg]  # the registry's order is the order attention runs
    picked = [(layer.place, layer.block) for layer in reg.select("down.2,mid", "self", (8, 8))]
    assert picked == [("down", 2)] * 4 + [("mid", 0)] * 2
    sd1 = discover_layers(random_pipeline("tiny").unet)
    assert [layer.index for layer in sd1.select("up.3", "self", (8, 8))] == [14, 15, 16]
    assert [layer.index for layer in sd1.select("mid,up", "self", (8, 8))] == list(range(7, 17))
