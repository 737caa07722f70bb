"""The one processor of an attention layer while freeprompt edits or records it.

``LayerProcessor`` is what ``unet.set_attn_processor`` installs. It owns the call: it computes what the layer
computes at this step (the edit control's edit, through ``kernels``, or plain attention) and then lets everyone who
observes the layer see what was actually computed, the map an edit used included: the method's own watched maps
(``EditControl.observe``) and any number of observers such as the attention recorder (``observer.observe(layer,
attn, computed)``). An edit and a recording therefore compose, in either order of installation: under
Prompt-to-Prompt a recorder sees the replaced cross-attention maps, under FPE the source's self-attention map in a
target's row. A layer with nothing to do at a step defers to the processor it replaced.

``attached`` puts a control or an observer on some layers for the length of a ``with`` block, installing
``LayerProcessor``s where there are none yet and restoring the previous processors on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

from ..errors import BadInput
from .control import EditControl
from .joint import joint_attention
from .kernels import (
    edited_cross_attention,
    masked_mutual_attention,
    mixed_attention,
    plain_attention,
    projected,
)
from .layers import AttentionLayer
from .reuse import check_plain
from .rules import CrossMapEdit, JointEdit, MaskedMix, RowMix


class LayerProcessor:
    """Computes one layer's attention for the edit control attached to it (if any) and shows every attached
    observer what was computed; with nothing to do it calls the processor it replaced."""

    def __init__(self, layer: AttentionLayer, original: Callable):
        self.layer = layer
        self.original = original
        self.control: EditControl | None = None
        self.observers: list = []

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        control = self.control
        edit = control.edit_for(self.layer, hidden_states.shape[0]) if control is not None else None
        watch = control.watch_for(self.layer) if control is not None and encoder_hidden_states is not None else None
        observers = [o for o in self.observers if o.recording_now()]
        if edit is None and watch is None and not observers:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if self.layer.kind == "joint":
            return self._joint(control, edit, observers, attn, (hidden_states, encoder_hidden_states, temb), kwargs)
        reading = control is not None and (edit is not None or watch is not None)
        if reading:
            assert control is not None
            if control.replaying:
                check_plain(attention_mask, observers)
            hidden_states, encoder_hidden_states, temb = control.layer_inputs(
                self.layer, edit, watch, (hidden_states, encoder_hidden_states, temb))
        out, computed = self._compute(edit, attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                      *args, **kwargs)
        if watch is not None:
            assert control is not None  # only a control watches
            control.observe(watch, computed.head_maps(watch.rows()), self.layer)
        for observer in observers:
            observer.observe(self.layer, attn, computed)
        return control.layer_output(out) if reading and control is not None else out

    def _joint(self, control: EditControl | None, edit, observers: list, attn, inputs: tuple, kwargs):
        """An MM-DiT layer's joint attention, edited and/or observed. FLUX passes its rotary positions fifth
        (``temb``'s place here) or by name; a single-stream layer's text tokens are what its sequence holds beyond
        the image grid's."""
        hidden_states, encoder_hidden_states, rotary = inputs
        rotary = kwargs.get("image_rotary_emb", rotary)
        if edit is not None and not isinstance(edit, JointEdit):
            raise RuntimeError(f"a {type(edit).__name__} on joint attention")  # a method's bug, not a user error
        if edit is not None and observers:
            raise BadInput(f"layer {self.layer.name} is edited and recorded at once; recording an edited joint "
                           "attention is not supported", "record a plain generation (no edit) of this model")
        text = 0
        if encoder_hidden_states is None:  # a single-stream layer: the text is the sequence's head
            if control is None:
                raise BadInput("recording FLUX's single-stream layers is not supported",
                               "record its double-stream layers (--layers double)")
            text = hidden_states.shape[1] - self.layer.tokens(control.latent_hw)

        observe = None
        if observers:
            def observe(q, k, image):
                for observer in observers:
                    observer.observe_joint(self.layer, attn, q, k, image)

        return joint_attention(attn, hidden_states, encoder_hidden_states, edit, self.layer.place, text, rotary,
                               observe)

    def _compute(self, edit, attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs):
        """(output, ``kernels.Computed``) of this call."""
        if isinstance(edit, CrossMapEdit) and encoder_hidden_states is not None:
            return edited_cross_attention(attn, hidden_states, encoder_hidden_states, edit, attention_mask, temb)
        if isinstance(edit, RowMix):
            return mixed_attention(attn, hidden_states, encoder_hidden_states, edit, attention_mask, temb)
        if isinstance(edit, MaskedMix) and encoder_hidden_states is None:
            assert self.control is not None  # the edit came from it
            masks, grid = self.control.masks(edit, self.layer)
            if masks is not None:
                return masked_mutual_attention(attn, hidden_states, edit, masks, grid, temb)
            return mixed_attention(attn, hidden_states, None, edit.mix, attention_mask, temb)
        if _is_default(self.original) and not args and not kwargs:  # the same computation, keeping Q and K
            return plain_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        return out, projected(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def _is_default(processor) -> bool:
    from diffusers.models.attention_processor import AttnProcessor2_0

    return type(processor) is AttnProcessor2_0


@contextmanager
def attached(unet, layers: Iterable[AttentionLayer], control: EditControl | None = None,
             observer=None) -> Iterator[list[LayerProcessor]]:
    """Inside the block ``control`` (at most one per layer) and/or ``observer`` are attached to a
    ``LayerProcessor`` on each of ``layers``; processors installed here are removed on exit, also after an error,
    and what was attached is detached."""
    layers, current = list(layers), unet.attn_processors
    fresh = {layer.processor_key: LayerProcessor(layer, current[layer.processor_key]) for layer in layers
             if not isinstance(current[layer.processor_key], LayerProcessor)}
    with installed_processors(unet, fresh):
        now = unet.attn_processors
        processors = [now[layer.processor_key] for layer in layers]
        busy = [p.layer.name for p in processors if control is not None and p.control is not None]
        if busy:
            raise BadInput(f"layer {busy[0]} is already edited by another run on this UNet",
                           "run one edit at a time on a pipeline")
        for processor in processors:
            processor.control = control if control is not None else processor.control
            processor.observers += [observer] if observer is not None else []
        try:
            yield processors
        finally:
            for processor in processors:
                processor.control = None if control is not None else processor.control
                if observer is not None:
                    processor.observers.remove(observer)


@contextmanager
def installed_processors(unet, replacements: Mapping[str, Callable]) -> Iterator[dict]:
    """Install processors for some layers (keys as in ``unet.attn_processors``) and always restore the
    originals on exit, also after an exception."""
    original = dict(unet.attn_processors)
    unknown = set(replacements) - set(original)
    if unknown:
        raise KeyError(f"no attention processors named {sorted(unknown)}")
    if replacements:
        unet.set_attn_processor({**original, **replacements})
    try:
        yield original
    finally:
        if replacements:
            unet.set_attn_processor(original)


__all__ = ["LayerProcessor", "attached", "installed_processors"]
