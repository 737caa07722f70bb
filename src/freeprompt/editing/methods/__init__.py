"""Editing methods as plans over one sampling loop, one module each: which rows' queries, keys, values (and, for
Prompt-to-Prompt, which cross-attention maps) every row uses, in which layers and steps.

    fpe        Free-Prompt-Editing: targets take the source's self-attention maps
    p2p        Prompt-to-Prompt: targets take the source's cross-attention maps (replace, refine, reweight, blend)
    masactrl   MasaCtrl: targets attend to the source's self-attention keys and values
    pnp        Plug-and-Play: the source's decoder features and self-attention queries and keys
    base       Plain (no edit), Combined (several at once), and what a method is

    from freeprompt.editing.methods import P2P
    edit(pipe, "a cat on a sofa", ["a dog on a sofa"], method=P2P(blend=("cat", "dog")))
"""

from __future__ import annotations

from ...errors import BadInput
from .base import Combined, Method, MethodContext, MethodPlan, Plain
from .fpe import FPE
from .masactrl import MasaCtrl
from .p2p import P2P
from .pnp import PnP

METHODS = {"fpe": FPE, "p2p": P2P, "masactrl": MasaCtrl, "pnp": PnP, "plain": Plain}


def method_named(name: str, **options) -> Method:
    """The method ``name`` (``fpe``, ``p2p``, ``masactrl``, ``pnp``, ``plain``, or several joined with ``+``, e.g.
    ``fpe+p2p``), each built from the ``options`` it knows (``{"fpe": {...}, "p2p": {...}}``). In ``fpe+p2p``
    FPE replaces the self-attention maps and P2P the cross-attention maps (P2P's own self-replacement is off)."""
    names = [part.strip().lower() for part in str(name).split("+")]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names or len(set(names)) != len(names):
        raise BadInput(f"unknown or repeated method {name!r}",
                       f"use {', '.join(METHODS)}, or several joined with '+', e.g. fpe+p2p")
    built = []
    for n in names:
        kwargs = dict(options.get(n) or {})
        if n == "p2p" and "fpe" in names:
            kwargs.setdefault("self_replace", "0:0")
        try:
            built.append(METHODS[n](**kwargs))
        except TypeError as err:
            raise BadInput(f"method {n}: {err}", "see the method's options in the README") from None
    return built[0] if len(built) == 1 else Combined(tuple(built))


__all__ = ["Combined", "FPE", "METHODS", "MasaCtrl", "Method", "MethodContext", "MethodPlan", "P2P", "Plain", "PnP",
           "method_named"]
