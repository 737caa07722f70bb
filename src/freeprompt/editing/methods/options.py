"""Method options, declared once: a method's options are the fields of its frozen dataclass, each declared with
``option()``: its kind, default, the default's source (the paper, or the release and file it comes from), the CLI
flag, a short label and the help text. The command line's options, the web UI's controls, ``eval``'s and
``bench``'s method options, ``run.json``'s record and the README's options table are all read from these
declarations (``declarations(cls)``), the way diffusers serialises a model from ``register_to_config``.

A value is read into its typed form once, when the method is made (``Options.__post_init__``): a step range
becomes a ``StepRange``, a layer spec a ``LayerSpec``, words a tuple, ``WORD=FACTOR`` pairs a tuple of pairs, so
``FPE(self_replace="0:0.6")`` and ``FPE(self_replace=StepRange(0, 0.6))`` are the same method. No torch here.

A method may also declare presets (``presets``, each a ``Preset``): a named bundle of option values for one kind of
edit, with what it is for and where its values come from. ``build_methods`` applies a preset before the options a
user gives (given options win); a preset's values are keyed by the options' command-line parameter names, so a
preset of one method may also set an option of a method that joins it (P2P's ``cross_replace`` beside FPE).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, ClassVar

from ...attention.layers import LayerSpec
from ...attention.steps import StepRange
from ...errors import BadInput

# What an option holds, and so how it is read, shown and given on the command line and in the UI.
STEPS, LAYERS, CHOICE, NUMBER, SWITCH, WORDS, WEIGHTS, TEXT = (
    "steps", "layers", "choice", "number", "switch", "words", "weights", "text")
KINDS = (STEPS, LAYERS, CHOICE, NUMBER, SWITCH, WORDS, WEIGHTS, TEXT)
KEY = "freeprompt"  # the dataclass field metadata key that holds a ``Declaration``


@dataclass(frozen=True)
class Declaration:
    """One option of one method. ``name`` is the dataclass field; ``param`` the command line's parameter name."""

    kind: str
    flag: str  # e.g. "--p2p-self-replace"
    label: str  # e.g. "self-replace steps": in messages ("P2P's self-replace steps: ...") and UI labels
    help: str  # what the option does, without its default
    source: str  # where the default comes from
    default: Any = None
    default_text: str | None = None  # how to show a default that depends on the model (field default None)
    choices: tuple[str, ...] = ()
    bounds: tuple[float, float] | None = None
    joins: str | None = None  # given beside this method alone (e.g. fpe), it adds its own method (fpe+p2p)
    name: str = ""

    @property
    def param(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def repeatable(self) -> bool:
        return self.kind in (WORDS, WEIGHTS)

    def shown_default(self) -> str:
        """The default as ``--help``, the UI and the README show it."""
        if self.default_text is not None:
            return self.default_text
        value = record(self.default)
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, list):
            return ", ".join(map(str, value)) or "none"
        return "none" if value is None else str(value)


def option(default, *, kind: str, flag: str, label: str, help: str, source: str, default_text: str | None = None,
           choices: tuple[str, ...] = (), bounds: tuple[float, float] | None = None, joins: str | None = None) -> Any:
    """A dataclass field that is a method option (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"unknown option kind {kind!r}")
    declared = Declaration(kind, flag, label, help, source, default, default_text, tuple(choices), bounds, joins)
    return field(default=default, metadata={KEY: declared})


def declarations(cls) -> list[Declaration]:
    """The declared options of a method class, in field order, each with its field name."""
    return [_named(f) for f in fields(cls) if KEY in f.metadata]


def _named(f: Field) -> Declaration:
    declared = f.metadata[KEY]
    return Declaration(**{**vars(declared), "name": f.name})


def read(declared: Declaration, value, owner: str):
    """``value`` (as given: text from the command line or the UI, or a Python value) in its typed form; a one-line
    ``BadInput`` that names ``owner``'s option otherwise."""
    if value is None or isinstance(value, (StepRange, LayerSpec)):
        return value
    try:
        return _READERS[declared.kind](declared, value)
    except BadInput as err:
        raise BadInput(f"{owner}'s {declared.label}: {err.problem}", err.fix) from None


def _steps(declared: Declaration, value) -> StepRange:
    return StepRange.parse(value)


def _layers(declared: Declaration, value) -> LayerSpec:
    if isinstance(value, str) and not value.strip():
        raise BadInput("is empty", f"give a layer spec (e.g. all, 4-14, <=32x32) or leave out {declared.flag}")
    return LayerSpec.parse(value)


def _choice(declared: Declaration, value) -> str:
    text = str(value).strip().lower()
    if text not in declared.choices:
        raise BadInput(f"unknown value {value!r}", f"use one of {', '.join(declared.choices)}")
    return text


def _number(declared: Declaration, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"{value!r} is not a number", f"give a number, e.g. {declared.default}") from None
    low, high = declared.bounds or (-math.inf, math.inf)
    if not math.isfinite(number) or not low <= number <= high:
        raise BadInput(f"{value} is outside {low:g}..{high:g}", f"use e.g. {declared.default}")
    return number


def _switch(declared: Declaration, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false", "on", "off", "yes", "no", "1", "0"):
        raise BadInput(f"{value!r} is not on or off", "give true or false")
    return text in ("true", "on", "yes", "1")


def _words(declared: Declaration, value) -> tuple[str, ...] | None:
    items = value.split(",") if isinstance(value, str) else list(value)
    words = tuple(" ".join(str(w).split()) for w in items)
    if not words or any(not w for w in words):
        raise BadInput(f"an empty word in {list(items)!r}", f"give words, e.g. {declared.flag} cat")
    return words


def _weights(declared: Declaration, value) -> tuple[tuple[str, float], ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    pairs = []
    for item in items:
        word, factor = item if isinstance(item, (tuple, list)) else str(item).rpartition("=")[::2]
        try:
            number = float(factor)
        except (TypeError, ValueError):
            number = math.nan
        if not str(word).strip() or not math.isfinite(number):
            raise BadInput(f"cannot read {item!r}", f"write WORD=FACTOR with a finite factor, e.g. {declared.flag} "
                           "fluffy=3")
        pairs.append((" ".join(str(word).split()), number))
    return tuple(pairs)


def _text(declared: Declaration, value) -> str:
    text = str(value).strip()
    if not text:
        raise BadInput("is empty", f"give a value or leave out {declared.flag}")
    return text


_READERS = {STEPS: _steps, LAYERS: _layers, CHOICE: _choice, NUMBER: _number, SWITCH: _switch, WORDS: _words,
            WEIGHTS: _weights, TEXT: _text}


def record(value):
    """An option's value as ``run.json`` and ``settings.json`` record it (and as it reads back)."""
    if isinstance(value, (StepRange, LayerSpec)):
        return str(value)
    if isinstance(value, tuple):
        return [record(v) for v in value]
    return value


@dataclass(frozen=True)
class Preset:
    """A named bundle of option values: ``values`` keyed by the options' command-line parameter names
    (``self_replace``, ``edit_unconditional``, ...), as text or typed values; ``help`` says what kind of edit it is
    for, ``source`` where its values come from (a study, a release)."""

    help: str
    values: Mapping[str, Any]
    source: str

    def flags(self, owners: Mapping[str, Declaration]) -> str:
        """The preset as command-line options (``--self-replace 0:1 --edit-uncond``), read from the declarations
        ``owners`` ({parameter: Declaration})."""
        parts = []
        for param, value in self.values.items():
            declared, shown = owners[param], record(value)
            if declared.kind == SWITCH:
                parts.append(declared.flag if shown else f"--no-{declared.flag[2:]}")
            else:
                values = shown if isinstance(shown, list) else [shown]
                parts += [f"{declared.flag} {v}" for v in values]
        return " ".join(parts)


@dataclass(frozen=True)
class Options:
    """The base of every method with options: reads each declared field once into its typed form, then runs the
    method's own ``check()``; ``options()`` is what ``run.json`` records."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # how messages and the UI name the method, e.g. "P2P"
    summary: ClassVar[str] = ""  # one line: what the target takes from the source
    reference: ClassVar[str] = ""  # the paper
    combined: ClassVar[Mapping[str, Mapping[str, Any]]] = {}  # defaults beside another method: {"fpe": {...}}
    presets: ClassVar[Mapping[str, Preset]] = {}  # named bundles of option values, e.g. {"object-swap": Preset(...)}

    def __post_init__(self):
        for declared in declarations(type(self)):
            object.__setattr__(self, declared.name, read(declared, getattr(self, declared.name), self.title))
        self.check()

    def check(self) -> None:
        """Checks across options (one-line ``BadInput``); the default has none."""

    def options(self) -> dict:
        return {d.name: record(getattr(self, d.name)) for d in declarations(type(self))}


__all__ = ["CHOICE", "Declaration", "KINDS", "LAYERS", "NUMBER", "Options", "Preset", "STEPS", "SWITCH", "TEXT",
           "WEIGHTS", "WORDS", "declarations", "option", "read", "record"]
