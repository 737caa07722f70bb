"""Recording attention maps during generation, only in the layers asked for.

``record_attention`` is a context manager in the spirit of DAAM's ``trace``: it attaches the recorder to the
chosen layers' ``LayerProcessor`` (``processors.py``) and always detaches it on exit; every other layer keeps its
own processor. The layer's processor computes the output (with no edit running: exactly plain generation's, the
same operations in the same order as diffusers' default ``AttnProcessor2_0``; a processor freeprompt did not write
is called as is and queries and keys are projected again) and hands the recorder what it attended with, so under an
edit the recorder sees the maps the edit actually used (a replaced cross-attention map, the source's
self-attention map in a target's row), in every step. The maps, softmax(QK^T * scale), are built head by head for
the recorded rows only.

    with record_attention(pipe, kind="cross", tokens=[[2], [2]]) as rec:
        sample(pipe.unet, scheduler, latents, embeddings, 50, 7.5, hooks=[rec])
    maps = rec.maps()          # {layer name: (prompts, h, w)}

On a diffusion transformer with joint attention (SD3's MM-DiT) the recorded layers are its joint layers: ``cross``
records the image queries' map over the text keys (the image-to-text block) and ``self`` their map over the image
keys (the image-to-image block), each block the softmax over its own keys alone (the joint row's block renormalised),
so both read as a U-Net's maps do; text positions are those of the CLIP tokens, which come first in SD3's text.
FLUX (packed latents, single-stream layers) is refused in one line, and so is recording an edited joint layer.

What is recorded
- Rows: with classifier-free guidance (``cfg=True``, the default) the UNet batch is ``[unconditional rows,
  conditional rows]`` (as ``diffusion.sampler.sample`` and diffusers pipelines build it) and by default only the
  *conditional* half is recorded (``branch="cond"``): the map of the prompt the image is generated for. Use
  ``branch="uncond"`` or ``branch="all"`` (every row) otherwise; with ``cfg=False`` every row is conditional.
- Steps: ``steps=None`` averages over every UNet call (every step, as the paper does). A subset (``steps=[0, 1]``
  or a ``StepRange`` with ``num_steps``) needs the sampler to report the step: pass ``hooks=[rec]``.
  Steps are never inferred by counting attention calls.
- Cross-attention: the map of the chosen token positions, averaged over heads, over the chosen steps and over
  the positions of one word (a word split into several sub-tokens gives the mean of their maps); shape
  ``(rows, h, w)`` on the layer's token grid. ``tokens=None`` keeps every text position: ``(rows, T, h, w)``,
  from which ``rec.word_maps(word, prompts)`` picks words afterwards.
- Self-attention: the tokens x tokens map, averaged over heads and chosen steps, shape ``(rows, n, n)``. Layers
  with more than ``self_max_tokens`` (256) tokens are block-pooled: the grid ``H x W`` is split into blocks of
  ``fh x fw`` tokens (the smallest divisors of H and W that are >= f, for the smallest f that brings the pooled
  grid to at most ``self_max_tokens`` cells: a 64x64 grid gives 4x4 blocks and a 256x256 map). The *query* axis
  is averaged over each block and the *key* axis summed over each block, so each row stays a probability
  distribution over the pooled key cells (this is average pooling of both axes times the constant block area
  ``fh*fw``; the sum keeps values near 1/n, which survives float16 storage). The map is computed per head and
  per chunk of query rows (``max_chunk_elements`` scores at a time), so a 4096-token layer never holds all heads'
  4096x4096 maps at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch

from ..diffusion.hooks import StepHooks
from ..errors import BadInput
from .joint import text_slice
from .layers import AttentionLayer, discover_layers
from .processors import attached
from .steps import StepRange
from .tokens import word_token_indices

BRANCHES = ("cond", "uncond", "all")
DEFAULT_LABEL = "tokens"


# ------------------------------------------------------------------------------------------------ pooling

def pool_factors(grid: tuple[int, int], max_tokens: int) -> tuple[int, int]:
    """Block size (fh, fw) that brings an ``H x W`` grid to at most ``max_tokens`` cells (see module doc)."""
    h, w = grid
    if h * w <= max_tokens:
        return 1, 1
    if max_tokens < 1:
        raise BadInput(f"self_max_tokens must be at least 1, got {max_tokens}", "use e.g. 256")
    f = 2
    while True:
        fh = next(d for d in range(min(f, h), h + 1) if h % d == 0)
        fw = next(d for d in range(min(f, w), w + 1) if w % d == 0)
        if (h // fh) * (w // fw) <= max_tokens:
            return fh, fw
        f += 1


def pooled_grid(grid: tuple[int, int], max_tokens: int) -> tuple[int, int]:
    fh, fw = pool_factors(grid, max_tokens)
    return grid[0] // fh, grid[1] // fw


# ------------------------------------------------------------------------------------------------ recorder

def _normalise_tokens(tokens) -> dict[str, list] | None:
    """``None`` | positions shared by all rows | one list per row | {label: either}."""
    if tokens is None:
        return None
    if isinstance(tokens, Mapping):
        if not tokens:
            raise BadInput("no token positions given", "give e.g. tokens={'color': [2]}")
        return {str(label): _one_token_spec(spec, str(label)) for label, spec in tokens.items()}
    return {DEFAULT_LABEL: _one_token_spec(tokens, DEFAULT_LABEL)}


def _one_token_spec(spec, label: str) -> list:
    if isinstance(spec, int):
        return [int(spec)]
    spec = list(spec)
    if not spec:
        raise BadInput(f"no token positions given for {label!r}", "give at least one position, e.g. [2]")
    if all(isinstance(x, int) for x in spec):
        return [int(x) for x in spec]
    rows = [[int(x)] if isinstance(x, int) else [int(y) for y in x] for x in spec]
    if any(not row for row in rows):
        raise BadInput(f"a row of token positions for {label!r} is empty", "give at least one position per prompt")
    return rows  # list of lists: one per recorded row


def _steps_set(steps, num_steps: int | None) -> frozenset[int] | None:
    if steps is None:
        return None
    if isinstance(steps, (StepRange, str)) or (isinstance(steps, tuple) and len(steps) == 2
                                                 and any(isinstance(x, float) for x in steps)):
        if num_steps is None:
            raise BadInput("a fractional step range needs the number of steps", "pass num_steps=... as well")
        return frozenset(StepRange.parse(steps).steps(num_steps))
    chosen = frozenset(int(s) for s in steps)
    if any(s < 0 for s in chosen):
        raise BadInput(f"step indices are 0-based and non-negative, got {sorted(chosen)}", "use e.g. steps=[0, 1, 2]")
    return chosen


class AttentionRecorder(StepHooks):
    """Sums of recorded maps per layer; see the module docstring for what is recorded. Made by
    ``record_attention``; read it with ``maps()``, ``word_maps()``, ``grids`` and ``calls``."""

    def __init__(self, unet, layers: list[AttentionLayer], kind: str, tokens, steps, cfg: bool, branch: str,
                 self_max_tokens: int, tokenizer=None, latent_hw: tuple[int, int] | None = None,
                 max_chunk_elements: int = 1 << 24, num_steps: int | None = None):
        if kind not in ("cross", "self"):
            raise BadInput(f"unknown attention kind {kind!r}", "use 'cross' or 'self'")
        if branch not in BRANCHES:
            raise BadInput(f"unknown branch {branch!r}", f"use one of {', '.join(BRANCHES)}")
        if not cfg and branch == "uncond":
            raise BadInput("branch 'uncond' needs classifier-free guidance (cfg=True)", "use branch='cond' or 'all'")
        self.unet = unet
        self.layers = list(layers)
        self.kind = kind
        self.cfg = cfg
        self.branch = branch
        self.self_max_tokens = int(self_max_tokens)
        self.tokenizer = tokenizer
        self.max_chunk_elements = int(max_chunk_elements)
        self._fixed_hw = latent_hw
        self._latent_hw = latent_hw
        self._steps = _steps_set(steps, num_steps)
        self._step: int | None = None
        self._tokens = _normalise_tokens(tokens) if kind == "cross" else None
        self.reset()

    # ---- control
    def begin_step(self, step: int) -> None:
        """Which denoising step (0-based) the next UNet call belongs to; the sampler calls it (``hooks=[rec]``)."""
        self._step = int(step)

    def reset(self, tokens="keep") -> None:
        """Forget everything recorded (and optionally set new token positions) before the next batch."""
        if tokens != "keep" and self.kind == "cross":
            self._tokens = _normalise_tokens(tokens)
        self._sums: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = {}
        self.steps_seen: set[int] = set()
        self.grids: dict[str, tuple[int, int]] = {}
        self._rows: int | None = None
        self._weights: torch.Tensor | None = None
        self._step = None
        self._latent_hw = self._fixed_hw
        self._grid_cache: dict = {}

    @property
    def labels(self) -> list[str]:
        return list(self._tokens) if self._tokens else []

    @property
    def tokens(self) -> dict | None:
        """The token positions recorded, by label: one list shared by all rows or one list per row."""
        return None if self._tokens is None else {k: list(v) for k, v in self._tokens.items()}

    # ---- results
    def maps(self, label: str | None = None) -> dict[str, torch.Tensor]:
        """Averaged maps per layer name, on the CPU. Cross: ``(rows, h, w)`` for ``label`` (may be omitted when
        one set of positions was given), or ``(rows, T, h, w)`` when ``tokens=None``. Self: ``(rows, n, n)``."""
        if not self.calls:
            raise BadInput("nothing was recorded", "generate inside the 'with record_attention(...)' block "
                           "(and, with a step subset, pass hooks=[rec] to the sampler: sample(..., hooks=[rec]))")
        index = None
        if self.kind == "cross" and self._tokens is not None:
            if label is None:
                if len(self._tokens) != 1:
                    raise BadInput(f"several token sets were recorded ({', '.join(self._tokens)})",
                                   "name one: rec.maps('label')")
                label = next(iter(self._tokens))
            if label not in self._tokens:
                raise BadInput(f"no token set named {label!r} was recorded", f"use one of {', '.join(self._tokens)}")
            index = list(self._tokens).index(label)
        out = {}
        for layer in self.layers:
            if layer.name not in self._sums:
                continue
            mean = self._sums[layer.name] / self.calls[layer.name]
            h, w = self.grids[layer.name]
            if self.kind == "self":
                out[layer.name] = mean.cpu()
            elif index is not None:
                out[layer.name] = mean[:, index].reshape(mean.shape[0], h, w).cpu()
            else:  # (rows, N, T) -> (rows, T, h, w)
                out[layer.name] = mean.transpose(1, 2).reshape(mean.shape[0], -1, h, w).cpu()
        return out

    def word_maps(self, word: str, prompts: Sequence[str] | str, occurrence: int | None = 0) -> dict[str, torch.Tensor]:
        """With ``tokens=None``: the map of ``word`` in each recorded row's prompt (sub-tokens averaged)."""
        if self.kind != "cross" or self._tokens is not None:
            raise BadInput("word_maps needs a cross-attention recording made with tokens=None",
                           "record with record_attention(pipe, kind='cross', tokens=None)")
        if self.tokenizer is None:
            raise BadInput("no tokenizer is known to the recorder", "pass the pipeline, not only its UNet")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        full = self.maps()
        rows = next(iter(full.values())).shape[0]
        if len(prompts) != rows:
            raise BadInput(f"{len(prompts)} prompt(s) given for {rows} recorded row(s)", "give one prompt per row")
        indices = [word_token_indices(self.tokenizer, p, word, occurrence) for p in prompts]
        return {name: torch.stack([m[r, idx].mean(0) for r, idx in enumerate(indices)]) for name, m in full.items()}

    # ---- called by the recording processors
    def see_latents(self, latent_hw: tuple[int, int]) -> None:
        """The latent size of the UNet call about to run (unless a fixed ``latent_hw`` was given)."""
        if self._fixed_hw is None:
            self._latent_hw = (latent_hw[0], latent_hw[1])

    def rows_of(self, batch: int) -> slice:
        """The rows of a UNet batch of ``batch`` rows that are recorded (see ``branch``)."""
        if self.cfg and self.branch != "all":
            if batch % 2:
                raise BadInput(f"the UNet batch has {batch} rows, which cannot be [unconditional, conditional] halves",
                               "pass cfg=False when sampling without classifier-free guidance")
            half = batch // 2
            return slice(half, batch) if self.branch == "cond" else slice(0, half)
        return slice(0, batch)

    def recording_now(self) -> bool:
        """Whether the current UNet call belongs to one of the recorded steps: with a step subset, only calls inside
        a sampling run that reports its steps to this recorder (``hooks=[rec]``) are recorded, so an inversion or
        a check run in the same block is not."""
        if self._steps is None:
            return True
        return self._step is not None and self._step in self._steps

    def end_run(self) -> None:
        self._step = None

    def _grid(self, layer: AttentionLayer, tokens: int) -> tuple[int, int]:
        cached = self._grid_cache.get(layer.name)
        if cached is not None and cached[0] == self._latent_hw:
            return cached[1]
        if self._latent_hw is None:
            raise BadInput("the latent size is unknown to the recorder", "pass latent_hw=(h, w)")
        grid = layer.grid(self._latent_hw)
        if grid[0] * grid[1] != tokens:
            raise BadInput(f"layer {layer.index} ({layer.kind}) has {tokens} tokens, not the {grid[0]}x{grid[1]} "
                           f"that latents of {self._latent_hw[0]}x{self._latent_hw[1]} imply",
                           "pass the latent size the UNet is called with as latent_hw=(h, w)")
        self._grid_cache[layer.name] = (self._latent_hw, grid)
        return grid

    def _token_weights(self, rows: int, text_len: int, device, dtype) -> torch.Tensor:
        """(rows, T, labels): the averaging weights of each label's positions in each row."""
        assert self._tokens is not None  # called only when token positions are recorded
        w = self._weights
        if w is not None and w.shape[:2] == (rows, text_len) and w.device == device and w.dtype == dtype:
            return w
        weights = torch.zeros(len(self._tokens), rows, text_len, dtype=torch.float64)
        for li, (label, spec) in enumerate(self._tokens.items()):
            per_row = spec if spec and isinstance(spec[0], list) else [spec] * rows
            if len(per_row) != rows:
                raise BadInput(f"token positions for {label!r} are given for {len(per_row)} prompt(s) but {rows} "
                               "row(s) are recorded", "give one list of positions per prompt")
            for r, positions in enumerate(per_row):
                bad = [p for p in positions if not 0 <= p < text_len]
                if bad:
                    raise BadInput(f"token position(s) {bad} for {label!r} are outside the text's {text_len} tokens",
                                   "use word_token_indices(tokenizer, prompt, word) to find positions")
                for p in positions:
                    weights[li, r, p] += 1.0 / len(positions)
        self._weights = weights.permute(1, 2, 0).contiguous().to(device=device, dtype=dtype)
        return self._weights

    def _accumulate(self, layer: AttentionLayer, value: torch.Tensor) -> None:
        if self._rows is None:
            self._rows = value.shape[0]
        elif value.shape[0] != self._rows:
            raise BadInput(f"the number of recorded rows changed from {self._rows} to {value.shape[0]} without a reset",
                           "call rec.reset() between batches")
        if layer.name in self._sums:
            self._sums[layer.name] += value
        else:
            self._sums[layer.name] = value.clone()
        self.calls[layer.name] = self.calls.get(layer.name, 0) + 1
        if self._step is not None:
            self.steps_seen.add(self._step)

    def observe(self, layer: AttentionLayer, attn, computed) -> None:
        """Add this call's map of the recorded rows, as it was computed (``kernels.Computed``: an edited map
        included) to ``layer``'s sum; the layer's processor calls it after computing the output."""
        if not self.recording_now():
            return
        rows = list(range(computed.rows))[self.rows_of(computed.rows)]
        with torch.no_grad():
            edited = {i: computed.edited[r].mean(0) for i, r in enumerate(rows) if r in computed.edited}
            self.add_map(layer, attn, computed.query[rows], computed.key[rows], computed.masks(rows), edited)

    def observe_joint(self, layer: AttentionLayer, attn, query, key, image: slice) -> None:
        """Add this call's map of a joint-attention layer (MM-DiT): the recorded rows' image queries over the text
        keys (kind cross: the image-to-text block) or over the image keys (kind self: the image-to-image block),
        each block normalised over its own keys, which is the softmax over those keys alone."""
        if not self.recording_now():
            return
        rows = self.rows_of(query.shape[0])
        keys = image if self.kind == "self" else text_slice(image, key.shape[2])
        self.add_map(layer, attn, query[rows, :, image], key[rows, :, keys], None)

    def add_map(self, layer: AttentionLayer, attn, query, key, mask, edited: dict | None = None) -> None:
        """Add the map of recorded rows' queries and keys (rows, heads, tokens, head_dim) to ``layer``'s sum;
        ``edited`` gives the head-averaged map of rows whose map was edited after the softmax (cross only)."""
        with torch.no_grad():
            dtype = torch.promote_types(query.dtype, torch.float32)
            query, key = query.to(dtype), key.to(dtype)
            tokens = query.shape[2]
            grid = self._grid(layer, tokens)
            if self.kind == "cross":
                value = self._cross_map(query, key, mask, attn.scale, edited or {})
                self.grids[layer.name] = grid
            elif edited:
                raise RuntimeError("an edited self-attention map cannot be recorded")
            else:
                value, pooled = self._self_map(layer, query, key, mask, attn.scale, grid)
                self.grids[layer.name] = pooled
        self._accumulate(layer, value)

    def _cross_map(self, query, key, mask, scale, edited: dict) -> torch.Tensor:
        r, heads, n, _ = query.shape
        t = key.shape[2]
        group = max(1, min(heads, self.max_chunk_elements // max(1, r * n * t)))
        total = None
        for h0 in range(0, heads, group):
            scores = query[:, h0:h0 + group] @ key[:, h0:h0 + group].transpose(-1, -2) * scale
            if mask is not None:
                scores = scores + mask[:, h0:h0 + group]
            part = scores.softmax(dim=-1).sum(dim=1)  # (r, n, t)
            total = part if total is None else total + part
        mean = total / heads
        for i, edited_map in edited.items():
            mean[i] = edited_map.to(mean)
        if self._tokens is None:
            return mean  # (r, n, t)
        weights = self._token_weights(r, t, mean.device, mean.dtype)
        return torch.bmm(mean, weights).transpose(1, 2)  # (r, labels, n)

    def _self_map(self, layer, query, key, mask, scale, grid):
        r, heads, n, _ = query.shape
        gh, gw = grid
        fh, fw = pool_factors(grid, self.self_max_tokens)
        ph, pw = gh // fh, gw // fw
        m = ph * pw
        acc = torch.zeros(r, m, m, dtype=query.dtype, device=query.device)
        # chunks of whole block-rows of queries: fh grid rows x gw columns at a time
        band = fh * gw
        bands = max(1, self.max_chunk_elements // max(1, r * n * band))
        chunk = band * bands
        for h in range(heads):
            k = key[:, h].transpose(-1, -2)
            for c0 in range(0, n, chunk):
                c1 = min(n, c0 + chunk)
                scores = query[:, h, c0:c1] @ k * scale  # (r, c, n)
                if mask is not None:
                    scores = scores + mask[:, h, c0:c1] if mask.shape[2] > 1 else scores + mask[:, h]
                probs = scores.softmax(dim=-1)
                if (fh, fw) == (1, 1):
                    acc[:, c0:c1] += probs
                    continue
                c = c1 - c0
                probs = probs.view(r, c, ph, fh, pw, fw).sum(dim=(3, 5)).view(r, c, m)  # key blocks: sum
                probs = probs.view(r, c // band, fh, pw, fw, m).sum(dim=(2, 4))  # query blocks: sum (mean below)
                acc[:, (c0 // band) * pw:(c1 // band) * pw] += probs.reshape(r, -1, m)
        acc /= heads * fh * fw
        return acc, (ph, pw)


@contextmanager
def record_attention(
    model,
    *,
    kind: str = "cross",
    layers: str | Iterable[int] | Iterable[AttentionLayer] | Iterable[str] | None = "all",
    tokens: Sequence[int] | Sequence[Sequence[int]] | Mapping[str, Sequence] | None = None,
    steps: Iterable[int] | StepRange | str | None = None,
    num_steps: int | None = None,
    cfg: bool = True,
    branch: str = "cond",
    self_max_tokens: int = 256,
    latent_hw: tuple[int, int] | None = None,
    max_chunk_elements: int = 1 << 24,
) -> Iterator[AttentionRecorder]:
    """Record attention maps of ``kind`` ('cross' or 'self') in the chosen ``layers`` while the block runs.

    ``model``: a diffusers pipeline (its tokenizer enables ``word_maps``) or a UNet. ``layers``: a spec as
    ``freeprompt layers`` takes (``all``, ``4-14``, ``<=32x32`` — token bounds evaluated at ``latent_hw``, or the
    UNet's default size), 1-based indices, layer descriptors or module paths. ``tokens`` (cross only): positions
    shared by every row (``[2]``), one list per recorded row (``[[2], [3, 4]]``), a dict ``{label: either}`` to
    record several words in one pass, or ``None`` for every text position. ``steps``: ``None`` (all), 0-based
    indices, or a fraction range such as ``"0:0.5"`` with ``num_steps``. ``cfg``/``branch``: which batch rows
    (see the module docstring). ``self_max_tokens``: the pooling bound of self-attention maps."""
    unet = recorded_network(model)
    tokenizer = getattr(model, "tokenizer", None)
    registry = discover_layers(unet)
    sample_size = unet.config.sample_size
    default_hw = tuple(sample_size) if isinstance(sample_size, (list, tuple)) else (sample_size, sample_size)
    chosen = registry.select(layers, layer_kind(registry, kind), latent_hw or default_hw)
    if not chosen:
        raise BadInput(f"the layer spec {layers!r} selects no {kind}-attention layer", "use e.g. layers='all'")
    recorder = AttentionRecorder(unet, chosen, kind, tokens, steps, cfg, branch, self_max_tokens, tokenizer,
                                 latent_hw, max_chunk_elements, num_steps)

    def remember_size(module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        if sample is not None:
            recorder.see_latents(sample.shape[-2:])

    hook = unet.register_forward_pre_hook(remember_size, with_kwargs=True)
    try:
        with attached(unet, chosen, observer=recorder):
            yield recorder
    finally:
        hook.remove()


def recorded_network(model):
    """The network whose attention is recorded: a pipeline's UNet or transformer, or the network given. FLUX's
    packed latents and single-stream layers are not wired into the recorder yet (refused in one line)."""
    network = getattr(model, "unet", None) or getattr(model, "transformer", None) or model
    if type(network).__name__.startswith("Flux"):
        raise BadInput("recording FLUX's attention maps is not supported yet",
                       "record SD3/SD3.5 (joint attention), PixArt or a UNet")
    return network


def layer_kind(registry, kind: str) -> str:
    """The layers a recording of ``kind`` reads: those of that kind, or an MM-DiT's joint layers, whose image-to-
    text block is its cross-attention and image-to-image block its self-attention."""
    return "joint" if not registry.of_kind(kind) and registry.of_kind("joint") else kind


def layer_layout(unet, latent_hw: tuple[int, int], kind: str | None = None) -> list[dict]:
    """The layer layout a dataset records: name, kind, 1-based index and token grid of each layer."""
    registry = discover_layers(unet)
    rows = []
    for layer in registry:
        if kind is not None and layer.kind != kind:
            continue
        h, w = layer.grid(latent_hw)
        rows.append({"name": layer.name, "kind": layer.kind, "index": layer.index, "grid": [h, w]})
    return rows


__all__ = ["AttentionRecorder", "layer_kind", "layer_layout", "pool_factors", "pooled_grid", "record_attention",
           "recorded_network"]
