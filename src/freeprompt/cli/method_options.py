"""The editing-method options of every command that runs methods (``edit``, ``eval``, ``bench shapes``), made from
the methods' own declarations (``editing/methods/options.py``): ``--method``, ``--preset`` and one typer option per
declared option, in a help panel per method, defaulting to None so that only what a user gives reaches the method.
The command receives them as one ``method_options`` dict (the preset under ``PRESET``) and hands it to
``build_methods``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Optional

import typer

from ..editing.methods import METHODS, PRESET, option_table, preset_table
from ..editing.methods.options import NUMBER, SWITCH, Declaration

_TYPES = {NUMBER: Optional[float], SWITCH: Optional[bool]}


def method_help() -> str:
    return (f"editing method: {', '.join(METHODS)}; several comma-separated (fpe,p2p,plain) run side by side on "
            "the same noise; methods joined with + run together (fpe+p2p: FPE's self-attention with P2P's "
            "cross-attention)")


def preset_help() -> str:
    presets = ", ".join(f"{name} ({method}: {preset.help})" for method, name, preset in preset_table()) or "none"
    return f"a named bundle of a method's options, applied before the ones you give (yours win): {presets}"


def method_parameters(default: str) -> list[inspect.Parameter]:
    """``--method``, ``--preset`` and a parameter for every declared option of every registered method."""
    method = typer.Option(default, "--method", help=method_help(), rich_help_panel="Editing method")
    preset = typer.Option(None, "--preset", help=preset_help(), rich_help_panel="Editing method", show_default=False)
    params = [inspect.Parameter("method", inspect.Parameter.KEYWORD_ONLY, default=method, annotation=str),
              inspect.Parameter(PRESET, inspect.Parameter.KEYWORD_ONLY, default=preset, annotation=Optional[str])]
    for name, declared in option_table():
        params.append(inspect.Parameter(declared.param, inspect.Parameter.KEYWORD_ONLY, default=_option(name, declared),
                                        annotation=_type(declared)))
    return params


def _type(declared: Declaration):
    return Optional[list[str]] if declared.repeatable else _TYPES.get(declared.kind, Optional[str])


def _option(method: str, declared: Declaration):
    names = [f"{declared.flag}/--no-{declared.flag[2:]}"] if declared.kind == SWITCH else [declared.flag]
    text = f"{METHODS[method].title}: {declared.help} [default: {declared.shown_default()}]"
    return typer.Option(None, *names, help=text, rich_help_panel=f"{METHODS[method].title} options", show_default=False)


def with_method_options(command: Callable, default: str = "fpe") -> Callable:
    """``command`` with ``--method`` and every method option added to its typer signature; it is called with
    ``method`` and ``method_options`` ({parameter: value or None}) in their place."""
    signature = inspect.signature(command)
    own = [p for p in signature.parameters.values() if p.name not in ("method", "method_options")]
    added = method_parameters(default)
    option_names = [p.name for p in added if p.name != "method"]

    @functools.wraps(command)
    def wrapper(**kwargs):
        given = {name: kwargs.pop(name) for name in option_names}
        return command(**kwargs, method_options=given)

    wrapper.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
    return wrapper


__all__ = ["method_help", "method_parameters", "preset_help", "with_method_options"]
