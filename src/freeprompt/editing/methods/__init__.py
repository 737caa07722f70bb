"""Editing methods as plans over one sampling loop, one module each: which rows' queries, keys, values (and, for
Prompt-to-Prompt, which cross-attention maps) every row uses, in which layers and steps. A method's options are
declared once, on its dataclass (``options.py``); everything else reads them from there.

    fpe        Free-Prompt-Editing: targets take the source's self-attention maps
    p2p        Prompt-to-Prompt: targets take the source's cross-attention maps (replace, refine, reweight, blend)
    masactrl   MasaCtrl: targets attend to the source's self-attention keys and values
    pnp        Plug-and-Play: the source's decoder features and self-attention queries and keys
    base       Plain (no edit), Combined (several at once), and what a method is
    options    how an option is declared, read and recorded

Adding a method is one module here and one line in ``METHODS`` (or ``register(cls)`` from outside the package).

    from freeprompt.editing.methods import P2P, build_method
    edit(pipe, "a cat on a sofa", ["a dog on a sofa"], method=P2P(blend=("cat", "dog")))
    edit(pipe, "a red car", ["a blue car"], method=build_method("fpe+p2p", {"self_replace": "0:0.6"}))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from ...errors import BadInput
from .base import Combined, Method, MethodContext, MethodPlan, Plain
from .fpe import FPE
from .masactrl import MasaCtrl
from .options import Declaration, Options, declarations
from .p2p import P2P
from .pnp import PnP

METHODS: dict[str, type[Options]] = {"fpe": FPE, "p2p": P2P, "masactrl": MasaCtrl, "pnp": PnP, "plain": Plain}
DEFAULT_METHOD = "fpe"
_Registered = TypeVar("_Registered", bound=Options)


def register(cls: type[_Registered]) -> type[_Registered]:
    """Add a method class (an ``Options`` dataclass with ``name`` and ``plan``) to ``METHODS``; its options appear
    in the command line, the UI and the README's table wherever those are built after this call."""
    clash = {d.param for d in declarations(cls)} & {d.param for _, d in option_table()}
    if not cls.name or cls.name in METHODS or "+" in cls.name or "," in cls.name or clash:
        raise ValueError(f"cannot register method {cls.name!r}: the name or the options {sorted(clash)} are taken")
    METHODS[cls.name] = cls
    return cls


def option_table() -> list[tuple[str, Declaration]]:
    """(method name, declaration) of every option of every registered method, in registry order: the one list
    the command line, the UI and the README's table are made from."""
    return [(name, d) for name, cls in METHODS.items() for d in declarations(cls)]


def method_choices() -> list[str]:
    """Every registered method, then the combinations methods declare (``fpe+p2p``): what a menu offers."""
    combos = [f"{other}+{name}" for name, cls in METHODS.items() for other in cls.combined if other in METHODS]
    return list(METHODS) + combos


def method_names(text: str) -> list[str]:
    """The methods a ``--method`` value names, comma-separated (``fpe,p2p``), each possibly a combination
    (``fpe+p2p``): checked, lower case, unique."""
    names = [part.strip().lower() for part in str(text).split(",") if part.strip()]
    for name in names:
        parts = name.split("+")
        if any(p not in METHODS for p in parts) or len(set(parts)) != len(parts):
            raise BadInput(f"unknown or repeated method {name!r}",
                           f"use {', '.join(METHODS)}, or several joined with '+', e.g. fpe+p2p")
    if not names or len(set(names)) != len(names):
        raise BadInput(f"no method or a repeated one in {text!r}", "give e.g. --method fpe or --method fpe,p2p,plain")
    return names


def build_methods(names: str, given: Mapping[str, object] | None = None) -> dict[str, Method]:
    """``{name: Method}`` for a ``--method`` value: one method or several, comma-separated (``fpe,p2p,plain``), each
    possibly a combination (``fpe+p2p``). ``given`` holds option values keyed by their command-line parameter names
    (``self_replace``, ``p2p_mode``, ...; None or absent: the default); each goes to every named method that owns
    it, and one that no named method owns is refused, except an option that ``joins`` a lone method
    (``cross_replace`` beside ``fpe`` runs ``fpe+p2p``). Beside another method a method takes its ``combined``
    defaults (P2P's own self-replacement is off beside FPE)."""
    given = {key: value for key, value in (given or {}).items() if value is not None}
    owners = {d.param: (method, d) for method, d in option_table()}
    unknown = sorted(set(given) - set(owners))
    if unknown:
        raise BadInput(f"unknown method option(s) {', '.join(unknown)}", "see 'freeprompt methods' for every option")
    runs = [_joined(name.split("+"), given, owners) for name in method_names(names)]
    strays = [p for p in given if not any(owners[p][0] in parts for parts in runs)]
    if strays:
        method = owners[strays[0]][0]
        flags = ", ".join(owners[p][1].flag for p in strays if owners[p][0] == method)
        raise BadInput(f"{flags} belong(s) to method {method}, not {names}", f"add --method {method} or drop them")
    built = [_build(parts, {k: v for k, v in given.items() if owners[k][0] in parts}) for parts in runs]
    return {method.name: method for method in built}


def build_method(name: str, given: Mapping[str, object] | None = None) -> Method:
    """One method (``fpe``, ``p2p``, ..., or a combination such as ``fpe+p2p``) with the options in ``given``, as
    ``build_methods`` reads them."""
    if len(method_names(name)) != 1:
        raise BadInput(f"{name!r} names several methods where one is expected", "give one, e.g. fpe or fpe+p2p")
    return next(iter(build_methods(name, given).values()))


def _joined(parts: list[str], given: dict, owners: dict) -> list[str]:
    """The methods that run for ``parts``: they, and for a lone method the method of a given option that joins it."""
    joining = [owners[p][0] for p in given if len(parts) == 1 and owners[p][1].joins == parts[0]]
    return parts + sorted(set(joining) - set(parts))


def _build(parts: list[str], given: dict) -> Method:
    built: list[Any] = []  # Options subclasses with plan(): Methods
    for part in parts:
        kwargs = {d.name: given[d.param] for d in declarations(METHODS[part]) if d.param in given}
        for other in parts:
            for key, value in METHODS[part].combined.get(other, {}).items():
                kwargs.setdefault(key, value)
        built.append(METHODS[part](**kwargs))
    return built[0] if len(built) == 1 else Combined(tuple(built))


__all__ = ["Combined", "DEFAULT_METHOD", "FPE", "METHODS", "MasaCtrl", "Method", "MethodContext", "MethodPlan", "P2P",
           "Plain", "PnP", "build_method", "build_methods", "method_choices", "method_names", "option_table",
           "register"]
