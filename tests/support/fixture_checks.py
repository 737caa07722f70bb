"""What every shipped shapes fixture is held to in the tests, whatever its network."""

import numpy as np

CASES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "star"), ("purple", "heart"),
         ("orange", "diamond")]


def prompted_colour_hits(pipe, guidance: float, steps: int = 20) -> int:
    """Plain generation of six "a <colour> <shape>" prompts (seeds 0-5): how many images the oracle finds at least
    40 pixels of the prompted colour in."""
    from freeprompt import edit
    from freeprompt.shapes import oracle

    hits = 0
    for seed, (color, shape) in enumerate(CASES):
        prompt = f"a {color} {shape}"
        image = edit(pipe, prompt, [prompt], seed=seed, steps=steps, guidance=guidance, self_replace="0:0",
                     progress=False).source
        hits += int(oracle.color_mask(np.asarray(image), color).sum() >= 40)
    return hits


def stored_parts(folder) -> tuple[set[str], int]:
    """The parts of a model folder that hold weights, and their bytes; every tensor must be fp16 safetensors, and
    no pickle file may be there."""
    from safetensors import safe_open

    weights = list(folder.rglob("*.safetensors"))
    for path in weights:
        with safe_open(str(path), "pt") as f:
            assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F16"}, path
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.ckpt"))
    return {p.parent.name for p in weights}, sum(p.stat().st_size for p in weights)
