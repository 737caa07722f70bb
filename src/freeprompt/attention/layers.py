"""How a layer is named: descriptors of a UNet's attention layers, discovered from the model.

Each attention module gets a 1-based index in forward (execution) order within its kind (self/cross), its
module path, its place (down/mid/up) and its level (how often the latent grid was halved before it), from
which its token grid follows at any resolution. ``unet.attn_processors`` lists the mid block last; the
registry sorts into forward order.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import BadInput

PLACES = ("down", "mid", "up")
_BLOCK = re.compile(r"^(down_blocks|mid_block|up_blocks)(?:\.(\d+))?\.")


@dataclass(frozen=True)
class AttentionLayer:
    name: str  # module path, e.g. down_blocks.1.attentions.0.transformer_blocks.0.attn1
    kind: str  # "self" or "cross"
    index: int  # 1-based, forward order within its kind
    place: str  # "down", "mid" or "up"
    level: int  # number of halvings of the latent grid before this layer
    block: int = 0  # the block's number within its place (down_blocks.N, up_blocks.N; 0 for mid)

    @property
    def processor_key(self) -> str:
        return self.name + ".processor"

    def grid(self, latent_hw: tuple[int, int]) -> tuple[int, int]:
        h, w = latent_hw
        for _ in range(self.level):  # stride-2 convs with padding 1 round up
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        return h, w

    def tokens(self, latent_hw: tuple[int, int]) -> int:
        h, w = self.grid(latent_hw)
        return h * w


SPEC_HELP = ("use 'all', index ranges like '4-14' or '1,3,5-7', a token bound like '<=32x32', or blocks like "
             "'down.2,mid,up.0'")
_BLOCKS = re.compile(r"(down|mid|up|double|single|block)(?:\.(\d+))?")
_COMPARE = {"<=": int.__le__, "<": int.__lt__, ">=": int.__ge__, ">": int.__gt__}


@dataclass(frozen=True)
class LayerSpec:
    """A parsed layer selection, the one reading of every ``--layers`` spelling: ``all`` (or ``*``), ``none``,
    1-based index ranges in forward order (``4-14``, ``1,3,5-7``), a token bound (``<=32x32``, ``<1024``,
    ``>=16x16``) that is evaluated at a resolution, or blocks (``down.2,mid,up.0``: every layer of those UNet
    blocks; ``up`` alone is every decoder block), which name the same part of SD1.x, SD2.x and SDXL alike."""

    text: str
    indices: frozenset[int] | None = None  # an index spec
    bound: tuple[str, int] | None = None  # a token bound: (operator, tokens)
    everything: bool = False
    blocks: frozenset[tuple[str, int | None]] | None = None  # (place, block number or None for all)

    @classmethod
    def parse(cls, spec: str | LayerSpec | None | list[int] | tuple[int, ...]) -> LayerSpec:
        if isinstance(spec, LayerSpec):
            return spec
        if spec is None:
            return cls("all", everything=True)
        if not isinstance(spec, str):
            indices = frozenset(int(i) for i in spec)
            return cls(_spelled(sorted(indices)), indices=indices)
        text = spec.strip().lower().replace(" ", "")
        if text in ("all", "*"):
            return cls(spec, everything=True)
        if text in ("none", ""):
            return cls(spec, indices=frozenset())
        bound = re.fullmatch(r"(<=|<|>=|>)(\d+)(?:x(\d+))?", text)
        if bound:
            op, a, b = bound.groups()
            return cls(spec, bound=(op, int(a) * int(b) if b else int(a)))
        if text[0].isalpha():
            return cls(spec, blocks=_parse_blocks(text, spec))
        return cls(spec, indices=frozenset(_parse_indices(text, spec)))

    def __str__(self) -> str:
        return self.text

    def chooses(self, index: int, tokens: int | None, place: str | None = None, block: int | None = None) -> bool:
        """Whether the layer with this 1-based index, this many tokens and this block (None: unknown) is selected."""
        if self.everything:
            return True
        if self.blocks is not None:
            if place is None:
                raise BadInput(f"the block spec {self.text!r} needs the layers' blocks, which are unknown here",
                               "select layers by index, e.g. 4-14")
            return (place, block) in self.blocks or (place, None) in self.blocks
        if self.bound is not None:
            if tokens is None:
                raise BadInput(f"the token bound {self.text!r} needs the layers' token grids, which are unknown here",
                               "select layers by index, e.g. 4-14")
            return _COMPARE[self.bound[0]](tokens, self.bound[1])
        assert self.indices is not None  # parse() sets one of the four
        return index in self.indices

    def check_indices(self, known: list[int], kind: str) -> None:
        """A one-line error when an index spec names layers that do not exist."""
        missing = sorted(self.indices - set(known)) if self.indices is not None else []
        if missing:
            raise BadInput(f"layer spec {self.text!r} names {kind}-attention layer(s) {missing} but there are {kind} "
                           f"layers {_ranges(sorted(known))}", "run 'freeprompt layers --model ...' to list them")

    def check_blocks(self, known: set[tuple[str, int]], kind: str) -> None:
        """A one-line error when a block spec names a block the model does not have (``up.9``)."""
        places = {place for place, _ in known}
        missing = [(p, b) for p, b in sorted(self.blocks or (), key=str)
                   if (p, b) not in known and not (b is None and p in places) and not (p == "mid" and p in places)]
        if missing:
            raise BadInput(f"layer spec {self.text!r} names block(s) {_block_names(missing)} but this model's "
                           f"{kind}-attention layers sit in {_block_names(known)}",
                           "run 'freeprompt layers --model ...' to list them")


def _block_names(blocks) -> str:
    return ", ".join(sorted(place if place == "mid" else f"{place}.{block}" for place, block in blocks))


def _parse_indices(text: str, original: str) -> set[int]:
    wanted: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise BadInput(f"cannot read layer spec {original!r}", SPEC_HELP)
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if lo > hi:
            raise BadInput(f"layer range {part!r} starts after it ends", "write ranges as LOW-HIGH, e.g. 4-14")
        wanted.update(range(lo, hi + 1))
    return wanted


def _parse_blocks(text: str, original: str) -> frozenset[tuple[str, int | None]]:
    blocks = set()
    for part in text.split(","):
        m = _BLOCKS.fullmatch(part)
        if not m:
            raise BadInput(f"cannot read layer spec {original!r}", SPEC_HELP)
        blocks.add((m.group(1), int(m.group(2)) if m.group(2) is not None and m.group(1) != "mid" else None))
    return frozenset(blocks)


def _spelled(indices: list[int]) -> str:
    """Sorted indices as an index spec that reads back the same: ``1,3,5-7`` (``none`` when empty)."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs) or "none"


def _ranges(indices: list[int]) -> str:
    if not indices:
        return "(none)"
    return f"{indices[0]}-{indices[-1]}" if indices == list(range(indices[0], indices[-1] + 1)) else str(indices)


class LayerRegistry:
    """All attention layers of a UNet, in forward order."""

    def __init__(self, layers: list[AttentionLayer]):
        self.layers = tuple(layers)
        self._by_name = {layer.name: layer for layer in layers}

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def by_name(self, name: str) -> AttentionLayer:
        try:
            return self._by_name[name.removesuffix(".processor")]
        except KeyError:
            raise BadInput(f"this model has no attention layer named {name!r}",
                           "run 'freeprompt layers' to list them") from None

    def of_kind(self, kind: str) -> list[AttentionLayer]:
        return [layer for layer in self.layers if layer.kind == kind]

    def select(self, spec, kind: str, latent_hw: tuple[int, int]) -> list[AttentionLayer]:
        """Layers of one kind chosen by ``spec``: a ``LayerSpec`` spelling (``all``, ``none``, ``4-14``,
        ``<=32x32`` evaluated at ``latent_hw``), a list of 1-based indices, of descriptors or of module paths."""
        candidates = self.of_kind(kind)
        if not candidates:
            raise BadInput(f"this model has no {kind}-attention layers", "check the model")
        if isinstance(spec, (list, tuple)) and spec and isinstance(spec[0], (AttentionLayer, str)):
            return self._named(spec, kind)
        chosen = LayerSpec.parse(spec)
        chosen.check_indices([layer.index for layer in candidates], kind)
        chosen.check_blocks({(layer.place, layer.block) for layer in candidates}, kind)
        selected = [layer for layer in candidates
                    if chosen.chooses(layer.index, layer.tokens(latent_hw), layer.place, layer.block)]
        if not selected and chosen.indices != frozenset():  # "none" selects nothing on purpose
            raise BadInput(f"the layer spec {chosen.text!r} selects no {kind}-attention layer of this model at "
                           f"{latent_hw[0]}x{latent_hw[1]} latents", "run 'freeprompt layers --model ...' to see "
                           "them (give 'none' to select none on purpose)")
        return selected

    def _named(self, layers, kind: str) -> list[AttentionLayer]:
        chosen = [layer if isinstance(layer, AttentionLayer) else self.by_name(layer) for layer in layers]
        wrong = [layer.index for layer in chosen if layer.kind != kind]
        if wrong:
            raise BadInput(f"layers {wrong} are not {kind}-attention layers", f"give {kind}-attention layers")
        return chosen

    def table(self, latent_hw: tuple[int, int]) -> list[dict]:
        rows = []
        for layer in self.layers:
            h, w = layer.grid(latent_hw)
            rows.append(
                {"kind": layer.kind, "index": layer.index, "grid": f"{h}x{w}",
                 "place": layer.place if layer.place == "mid" else f"{layer.place}.{layer.block}",
                 "tokens": h * w, "name": layer.name}
            )
        return rows


def discover_layers(network) -> LayerRegistry:
    """Descriptors for every attention module that has a processor, in forward order: a UNet's (self and cross, in
    its down, mid and up blocks) or a diffusion transformer's (``transformer_layers``)."""
    if not hasattr(network, "down_blocks"):
        return transformer_layers(network)
    from diffusers.models.attention_processor import Attention

    processor_paths = {key.removesuffix(".processor") for key in network.attn_processors}
    down_levels, mid_level, up_levels = _block_levels(network)
    found = []
    for order, (name, module) in enumerate(network.named_modules()):
        if not isinstance(module, Attention) or name not in processor_paths:
            continue
        m = _BLOCK.match(name)
        if m is None:
            raise BadInput(f"attention module {name!r} is outside the UNet's down/mid/up blocks",
                           "this UNet layout is not supported")
        block, number = m.group(1), int(m.group(2) or 0)
        place = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}[block]
        level = mid_level if place == "mid" else (down_levels if place == "down" else up_levels)[number]
        kind = "cross" if module.is_cross_attention else "self"
        # named_modules() follows registration order, which is forward order inside a block.
        found.append((PLACES.index(place), number, order, name, kind, place, level, number))
    found.sort()
    return _numbered([(name, kind, place, level, number) for *_, name, kind, place, level, number in found])


def transformer_layers(network) -> LayerRegistry:
    """A diffusion transformer's attention layers in forward order. Every token grid is the latents' over the patch
    size (level 1: one halving, 2x2 patches or FLUX's 2x2 packing). PixArt's blocks hold a ``self`` and a
    ``cross`` layer (place ``block``); an MM-DiT's attention runs over text and image tokens together: ``joint``
    layers, placed ``double`` (SD3's joint blocks, FLUX's double-stream blocks: separate text and image weights) or
    ``single`` (FLUX's single-stream blocks: one sequence, text first). SD3.5's extra image self-attention in its
    dual-attention blocks is ``self``."""
    found = []
    for prefix, place in (("transformer_blocks", "double"), ("single_transformer_blocks", "single")):
        for number, block in enumerate(getattr(network, prefix, None) or ()):
            for attr in ("attn", "attn1", "attn2"):
                if getattr(block, attr, None) is not None:
                    kind = _transformer_kind(block, attr)
                    found.append((f"{prefix}.{number}.{attr}", kind, place if kind == "joint" else "block", 1, number))
    if not found:
        raise BadInput(f"a {type(network).__name__} has no attention blocks freeprompt knows",
                       "use Stable Diffusion 1.x/2.x/XL, SD3/3.5, FLUX.1 or PixArt-Sigma")
    return _numbered(found)


def _transformer_kind(block, attr: str) -> str:
    """An MM-DiT block's ``attn`` is joint; SD3.5's ``attn2`` beside it attends over image tokens only; PixArt's
    ``attn1`` is self- and ``attn2`` cross-attention."""
    if attr == "attn":
        return "joint"
    return "self" if attr == "attn1" or getattr(block, "attn", None) is not None else "cross"


def _numbered(found: list[tuple]) -> LayerRegistry:
    """Descriptors of (name, kind, place, level, block) in forward order, numbered from 1 within each kind."""
    counters: dict[str, int] = {}
    layers = []
    for name, kind, place, level, number in found:
        counters[kind] = counters.get(kind, 0) + 1
        layers.append(AttentionLayer(name=name, kind=kind, index=counters[kind], place=place, level=level,
                                     block=number))
    return LayerRegistry(layers)


def _block_levels(unet) -> tuple[list[int], int, list[int]]:
    """Grid level at which each down block, the mid block and each up block run."""
    down_levels, level = [], 0
    for block in unet.down_blocks:
        down_levels.append(level)
        if getattr(block, "downsamplers", None):
            level += 1
    mid_level = level
    up_levels = []
    for block in unet.up_blocks:
        up_levels.append(level)
        if getattr(block, "upsamplers", None):
            level -= 1
    return down_levels, mid_level, up_levels
