"""The editing-method options of ``freeprompt edit`` (and of the commands that run one method): typer options
that default to None, so that only what a user gives reaches the method, and a one-line error names an option
given to a method that is not running."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import typer

from ..attention import DEFAULT_LAYERS, DEFAULT_SELF_REPLACE
from ..errors import BadInput

METHOD_HELP = "fpe, p2p, masactrl, pnp, plain, or fpe+p2p (FPE's self-attention with P2P's cross-attention)"


@dataclass
class MethodOptions:
    """What the command line said about the method; ``build()`` turns it into a ``Method``."""

    method: str = "fpe"
    self_replace: Optional[str] = None
    layers: Optional[str] = None
    edit_uncond: Optional[bool] = None
    cross_replace: Optional[str] = None
    p2p_mode: Optional[str] = None
    p2p_self_replace: Optional[str] = None
    p2p_self_layers: Optional[str] = None
    reweight: Optional[list[str]] = None
    blend: Optional[list[str]] = None
    blend_threshold: Optional[float] = None
    blend_steps: Optional[str] = None
    masactrl_steps: Optional[str] = None
    masactrl_layers: Optional[str] = None
    mask_word: Optional[list[str]] = None
    mask_threshold: Optional[float] = None
    pnp_feature_steps: Optional[str] = None
    pnp_attention_steps: Optional[str] = None
    pnp_layers: Optional[str] = None
    pnp_feature_block: Optional[str] = None

    def build(self):
        """The ``Method``: ``--cross-replace`` beside FPE means ``fpe+p2p``."""
        from ..editing.methods import method_named

        name = self.method.lower()
        for field, value in vars(self).items():
            if isinstance(value, str) and not value.strip() and field != "method":
                flag = "--" + field.replace("_", "-")
                raise BadInput(f"{flag} is empty", f"give a value (e.g. all or none for layers) or leave out {flag}")
        self._check_specs()
        if name == "fpe" and self.cross_replace is not None:
            name = "fpe+p2p"
        given = {method: {k: v for k, v in options.items() if v is not None}
                 for method, options in self._by_method().items()}
        for method, options in given.items():
            if options and method not in name.split("+"):
                flags = ", ".join("--" + FLAGS.get((method, key), key).replace("_", "-") for key in options)
                raise BadInput(f"{flags} belong(s) to method {method}, not {name}", f"add --method {method} or drop them")
        return method_named(name, **given)

    def _check_specs(self) -> None:
        """Layer specs and step ranges read now, before any model is loaded (whether the layers exist is checked
        against the model later)."""
        from ..attention import LayerSpec, StepRange

        for field, value in vars(self).items():
            if value is None or not isinstance(value, str):
                continue
            flag = "--" + field.replace("_", "-")
            try:
                if field.endswith("layers"):
                    LayerSpec.parse(value)
                elif field.endswith(("replace", "steps")):
                    StepRange.parse(value)
            except BadInput as err:
                raise BadInput(f"{flag}: {err.problem}", err.fix) from None

    def _by_method(self) -> dict[str, dict]:
        return {
            "fpe": {"self_replace": self.self_replace, "layers": self.layers, "edit_unconditional": self.edit_uncond},
            "p2p": {"mode": self.p2p_mode, "cross_replace": self.cross_replace, "self_replace": self.p2p_self_replace,
                    "self_layers": self.p2p_self_layers, "reweight": _reweight(self.reweight),
                    "blend": tuple(self.blend) if self.blend else None, "blend_threshold": self.blend_threshold,
                    "blend_steps": self.blend_steps},
            "masactrl": {"steps": self.masactrl_steps, "layers": self.masactrl_layers,
                         "mask_words": tuple(self.mask_word) if self.mask_word else None,
                         "mask_threshold": self.mask_threshold},
            "pnp": {"feature_steps": self.pnp_feature_steps, "attention_steps": self.pnp_attention_steps,
                    "layers": self.pnp_layers, "feature_block": self.pnp_feature_block},
        }


FLAGS = {("fpe", "edit_unconditional"): "edit_uncond", ("p2p", "mode"): "p2p_mode",
         ("p2p", "self_replace"): "p2p_self_replace", ("p2p", "self_layers"): "p2p_self_layers",
         ("masactrl", "steps"): "masactrl_steps", ("masactrl", "layers"): "masactrl_layers",
         ("masactrl", "mask_words"): "mask_word", ("pnp", "feature_steps"): "pnp_feature_steps",
         ("pnp", "attention_steps"): "pnp_attention_steps", ("pnp", "layers"): "pnp_layers",
         ("pnp", "feature_block"): "pnp_feature_block"}


def _reweight(items: Optional[list[str]]):
    if not items:
        return None
    pairs = []
    for item in items:
        word, _, factor = item.rpartition("=")
        try:
            pairs.append((word.strip(), float(factor)))
        except ValueError:
            raise BadInput(f"cannot read --reweight {item!r}", "write WORD=FACTOR, e.g. --reweight fluffy=3") from None
        if not word.strip():
            raise BadInput(f"cannot read --reweight {item!r}", "write WORD=FACTOR, e.g. --reweight fluffy=3")
    return tuple(pairs)


PANEL = "Editing method"
METHOD_HELPS = {  # the help text of every method option, by MethodOptions field
    "self_replace": f"FPE: fraction range of steps whose self-attention maps are replaced "
                    f"[default: {DEFAULT_SELF_REPLACE}]",
    "layers": f"FPE: self-attention layers: all, 4-14, 1,3,5-7 or a token bound [default: {DEFAULT_LAYERS}]",
    "edit_uncond": "FPE: also in the unconditional half of guidance [default: no]",
    "cross_replace": "P2P: steps whose cross-attention maps are replaced [default: 0:0.8]; " "beside --method fpe it means fpe+p2p",
    "p2p_mode": "P2P: replace (a word swap) or refine (prompts of different lengths)",
    "p2p_self_replace": "P2P: steps whose self-attention maps are replaced [default: 0:0.4]",
    "p2p_self_layers": "P2P: those self-attention layers [default: <=16x16; SDXL <=32x32]",
    "reweight": "P2P: WORD=FACTOR scales a target word's attention (repeat)",
    "blend": "P2P: local blend, one word per prompt, source first (repeat)",
    "blend_threshold": "P2P: local blend mask threshold [default: 0.3]",
    "blend_steps": "P2P: steps after which the local blend applies [default: 0:1]",
    "masactrl_steps": "MasaCtrl: steps [default: 0.08:1, step 4 of 50]",
    "masactrl_layers": "MasaCtrl: self-attention layers [default: 11-16; SDXL 45-70]",
    "mask_word": "MasaCtrl: mask from a source word and a target word (give twice)",
    "mask_threshold": "MasaCtrl: mask threshold [default: 0.1]",
    "pnp_feature_steps": "PnP: steps of the feature injection [default: 0:0.8]",
    "pnp_attention_steps": "PnP: steps of the query/key injection [default: 0:0.5]",
    "pnp_layers": "PnP: self-attention layers of the query/key injection " "[default: 9-16; SDXL 45-70]",
    "pnp_feature_block": "PnP: the decoder ResNet block whose features are injected " "[default: up_blocks.1.resnets.1; SDXL up_blocks.0.resnets.1]",
}


def method_option():
    return typer.Option("fpe", "--method", help=METHOD_HELP, rich_help_panel=PANEL)


def opt(field: str, *names: str):
    """The typer option of a method setting (default None: only what a user gives reaches the method)."""
    return typer.Option(None, *names, help=METHOD_HELPS[field], rich_help_panel=PANEL)
