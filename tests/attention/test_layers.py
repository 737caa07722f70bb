import pytest
import torch

from freeprompt.attention import discover_layers
from freeprompt.errors import BadInput

SD1_SIDES = [64, 64, 32, 32, 16, 16, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64]


def test_sd1_layout_has_16_self_and_16_cross_layers_in_forward_order(tiny_pipe):
    reg = discover_layers(tiny_pipe.unet)
    for kind in ("self", "cross"):
        layers = reg.of_kind(kind)
        assert [layer.index for layer in layers] == list(range(1, 17))
        # at 512 px SD1.x latents are 64x64
        assert [layer.grid((64, 64))[0] for layer in layers] == SD1_SIDES
        assert [layer.place for layer in layers] == ["down"] * 6 + ["mid"] + ["up"] * 9
    assert reg.of_kind("self")[6].name == "mid_block.attentions.0.transformer_blocks.0.attn1"


def test_registry_order_matches_the_order_attention_actually_runs(tiny_pipe):
    """Independent check: hooks record which attention modules run, in which order, with how many tokens."""
    unet = tiny_pipe.unet
    reg = discover_layers(unet)
    calls = []
    hooks = [unet.get_submodule(layer.name).register_forward_hook(
        lambda mod, args, out, name=layer.name: calls.append((name, args[0].shape[1]))) for layer in reg]
    try:
        with torch.no_grad():
            unet(torch.zeros(1, 4, 16, 24), 10, encoder_hidden_states=torch.zeros(1, 77, 32))
    finally:
        for h in hooks:
            h.remove()
    assert [name for name, _ in calls] == [layer.name for layer in reg]
    assert [tokens for _, tokens in calls] == [layer.tokens((16, 24)) for layer in reg]


@pytest.mark.parametrize("spec,expected", [
    ("<=32x32", list(range(3, 14))),
    ("4-14", list(range(4, 15))),
    ("1,3,5-7", [1, 3, 5, 6, 7]),
    ("all", list(range(1, 17))),
    ("none", []),
    ("<1024", list(range(5, 11))),
    (">=64x64", [1, 2, 14, 15, 16]),
    ([2, 16], [2, 16]),
])
def test_layer_selection(tiny_pipe, spec, expected):
    reg = discover_layers(tiny_pipe.unet)
    assert [layer.index for layer in reg.select(spec, "self", (64, 64))] == expected


@pytest.mark.parametrize("spec", ["3-", "a-b", "0-5", "12-17", "5-3", "<=32y32"])
def test_bad_layer_specs_are_one_line_errors(tiny_pipe, spec):
    reg = discover_layers(tiny_pipe.unet)
    with pytest.raises(BadInput) as err:
        reg.select(spec, "self", (64, 64))
    assert "\n" not in str(err.value)
