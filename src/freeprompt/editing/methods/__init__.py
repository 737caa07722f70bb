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
from .options import Declaration, Options, Preset, declarations
from .p2p import P2P
from .pnp import PnP

METHODS: dict[str, type[Options]] = {"fpe": FPE, "p2p": P2P, "masactrl": MasaCtrl, "pnp": PnP, "plain": Plain}
DEFAULT_METHOD = "fpe"
_Registered = TypeVar("_Registered", bound=Options)
PRESET = "preset"  # the key of ``build_methods``' given options that names a preset (the command line's --preset)


def register(cls: type[_Registered]) -> type[_Registered]:
    """Add a method class (an ``Options`` dataclass with ``name`` and ``plan``) to ``METHODS``; its options appear
    in the command line, the UI and the README's table wherever those are built after this call."""
    clash = {d.param for d in declarations(cls)} & ({d.param for _, d in option_table()} | {PRESET})
    if not cls.name or cls.name in METHODS or "+" in cls.name or "," in cls.name or clash:
        raise ValueError(f"cannot register method {cls.name!r}: the name or the options {sorted(clash)} are taken")
    METHODS[cls.name] = cls
    return cls


def option_table() -> list[tuple[str, Declaration]]:
    """(method name, declaration) of every option of every registered method, in registry order: the one list
    the command line, the UI and the README's table are made from."""
    return [(name, d) for name, cls in METHODS.items() for d in declarations(cls)]


def preset_table() -> list[tuple[str, str, Preset]]:
    """(method name, preset name, preset) of every preset of every registered method, in registry order."""
    return [(name, preset, declared) for name, cls in METHODS.items()
            for preset, declared in getattr(cls, "presets", {}).items()]


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
    defaults (P2P's own self-replacement is off beside FPE). ``given["preset"]`` names a preset of one of the named
    methods: its values go to the runs of that method before the given options (which win)."""
    given = {key: value for key, value in (given or {}).items() if value is not None}
    preset_name = given.pop(PRESET, None)
    owners = {d.param: (method, d) for method, d in option_table()}
    unknown = sorted(set(given) - set(owners))
    if unknown:
        raise BadInput(f"unknown method option(s) {', '.join(unknown)}", "see 'freeprompt methods' for every option")
    named = [name.split("+") for name in method_names(names)]
    owner, preset = find_preset(preset_name, named)
    values = [({**preset.values, **given} if owner in parts else given) if preset else given for parts in named]
    runs = [_joined(parts, chosen, owners) for parts, chosen in zip(named, values)]
    strays = [p for p in given if not any(owners[p][0] in parts for parts in runs)]
    if strays:
        method = owners[strays[0]][0]
        flags = ", ".join(owners[p][1].flag for p in strays if owners[p][0] == method)
        raise BadInput(f"{flags} belong(s) to method {method}, not {names}", f"add --method {method} or drop them")
    built = [_build(parts, {k: v for k, v in chosen.items() if owners[k][0] in parts})
             for parts, chosen in zip(runs, values)]
    return {method.name: method for method in built}


def find_preset(name, named: list[list[str]]) -> tuple[str | None, Preset | None]:
    """(the method that declares preset ``name``, the preset) among the methods named (``[["fpe"], ["p2p"]]``);
    (None, None) for no preset; a one-line error for a preset no named method declares."""
    if name is None:
        return None, None
    name = str(name).strip().lower()
    running = {part for parts in named for part in parts}
    declared = [(method, preset) for method, preset_name, preset in preset_table() if preset_name == name]
    here = [(method, preset) for method, preset in declared if method in running]
    if here:
        return here[0]
    if declared:
        raise BadInput(f"preset {name!r} belongs to method {declared[0][0]}, which is not running",
                       f"add --method {declared[0][0]} or drop --preset")
    known = ", ".join(f"{p} ({m})" for m, p, _ in preset_table()) or "none"
    raise BadInput(f"unknown preset {name!r}", f"use one of: {known} (see 'freeprompt methods')")


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
           "PRESET", "Plain", "PnP", "Preset", "build_method", "build_methods", "find_preset", "method_choices",
           "method_names", "option_table", "preset_table", "register"]
