"""What a probing dataset holds: a ``DatasetSpec`` is a list of prompt templates, a class field (the word whose
meaning is probed: colour, animal), other fields crossed with it (objects) or cycled through as nuisance, seeds,
and the words whose maps are recorded (``target`` = the class word; the "a <color> car" set also records the
non-target words ``a`` and ``noun``). Items are ordered seed-major (every class of seed 0, then of seed 1, ...)
so any prefix is class-balanced, and every class uses the same seeds (same noise), so a probe cannot lean on
layout. The experiments, with their default seed counts:

    color          cross  "a <color> car"                       10 colours x 200 seeds; words target, a, noun
    color_object   cross  "a <color> <object>"                  10 colours x 100 objects x 2 seeds
    animal         cross  "a <animal> standing in the park"     10 animals x 200 seeds
    complex        cross  12 templates around "<color> car"     10 colours x 12 templates x 20 seeds
    self_color     self   "a <color> car"                       200 seeds
    self_animal    self   "a <animal> standing in the park"     200 seeds
    self_complex   self   the 12 complex templates              10 colours x 12 templates x 20 seeds

(the non-target-word experiment, the paper's Table 7, probes the ``a`` and ``noun`` maps of ``color``.)
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

from ..errors import BadInput
from .words import Vocabulary, check_word_list, get_vocabulary


@dataclass
class Item:
    id: int
    prompt: str
    seed: int
    label: str  # class name
    template: str
    fields: dict
    words: dict  # recorded word label -> the word in this prompt


@dataclass
class DatasetSpec:
    name: str
    kind: str  # "cross" or "self"
    templates: list
    class_field: str
    classes: list
    seeds: list
    fields: dict = field(default_factory=dict)  # crossed with the classes (e.g. object)
    cycle: dict = field(default_factory=dict)  # nuisance fields: value (seed position + class position) % len
    constants: dict = field(default_factory=dict)  # e.g. noun = car
    words: dict = field(default_factory=dict)  # word label -> word template, e.g. {"target": "{color}"}
    vocabulary: str | None = None
    description: str = ""

    def __post_init__(self):
        if self.kind not in ("cross", "self"):
            raise BadInput(f"dataset kind {self.kind!r} is neither cross nor self", "use 'cross' or 'self'")
        check_word_list(self.classes, "class")
        check_word_list(self.templates, "template")
        for name, values in self.fields.items():
            check_word_list(values, name)
        if not self.seeds:
            raise BadInput(f"dataset {self.name!r} has no seeds", "give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise BadInput(f"dataset {self.name!r} lists a seed twice", "give distinct seeds")
        if not self.words:
            self.words = {"target": f"{{{self.class_field}}}"}

    def items(self) -> list[Item]:
        names = list(self.fields)
        combos = list(itertools.product(*[self.fields[n] for n in names])) if names else [()]
        out = []
        for si, seed in enumerate(self.seeds):
            for template in self.templates:
                for combo in combos:
                    for ci, cls in enumerate(self.classes):
                        values = {**self.constants, **dict(zip(names, combo)), self.class_field: cls}
                        for name, options in self.cycle.items():
                            values[name] = options[(si + ci) % len(options)]
                        try:
                            prompt = template.format(**values)
                            words = {label: word.format(**values) for label, word in self.words.items()}
                        except KeyError as err:
                            raise BadInput(f"template {template!r} of dataset {self.name!r} needs a value for "
                                           f"{{{err.args[0]}}}", "give that field in the dataset spec") from None
                        used = {k: v for k, v in values.items() if f"{{{k}}}" in template}
                        out.append(Item(len(out), prompt, int(seed), cls, template, used, words))
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DatasetSpec:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


EXPERIMENTS = {
    "color": ("cross", 200, "a <color> <noun>: colour classes; also the maps of 'a' and the noun (non-target words)"),
    "color_object": ("cross", 2, "a <color> <object>: colour classes over many objects (out of distribution)"),
    "animal": ("cross", 200, "a <animal> standing in the park: animal classes"),
    "complex": ("cross", 20, "complex templates around <color> <noun>: colour classes"),
    "self_color": ("self", 200, "self-attention of a <color> <noun>: colour classes"),
    "self_animal": ("self", 200, "self-attention of a <animal> standing in the park: animal classes"),
    "self_complex": ("self", 20, "self-attention of the complex templates around <color> <noun>: colour classes"),
}


def build_spec(name: str, vocabulary: str | Vocabulary = "paper", seeds: int | list[int] | None = None,
               first_seed: int = 0) -> DatasetSpec:
    """The dataset ``name`` (see ``EXPERIMENTS``) over a vocabulary; ``seeds`` is a count (from ``first_seed``)
    or an explicit list (default: the issue's count for that experiment)."""
    if name not in EXPERIMENTS:
        raise BadInput(f"unknown probing dataset {name!r}", f"use one of {', '.join(EXPERIMENTS)}")
    vocab = get_vocabulary(vocabulary) if isinstance(vocabulary, str) else vocabulary
    kind, default_seeds, description = EXPERIMENTS[name]
    if seeds is None:
        seeds = default_seeds
    seed_list = list(range(first_seed, first_seed + int(seeds))) if isinstance(seeds, int) else [int(s) for s in seeds]
    if isinstance(seeds, int) and seeds < 1:
        raise BadInput(f"the number of seeds must be at least 1, got {seeds}", "use e.g. --seeds 200")
    common = dict(name=name, kind=kind, seeds=seed_list, vocabulary=vocab.name, description=description)
    base = name.removeprefix("self_")
    if base == "color":
        words = {"target": "{color}", "a": "a", "noun": "{noun}"} if kind == "cross" else {"target": "{color}"}
        return DatasetSpec(templates=[vocab.color_template], class_field="color", classes=list(vocab.colors),
                           constants={"noun": vocab.noun}, words=words, **common)
    if base == "color_object":
        return DatasetSpec(templates=[vocab.object_template], class_field="color", classes=list(vocab.colors),
                           fields={"object": list(vocab.objects)}, words={"target": "{color}"}, **common)
    if base == "animal":
        cycle = {"color": list(vocab.animal_colors)} if "{color}" in vocab.animal_template else {}
        if "{color}" in vocab.animal_template and not vocab.animal_colors:
            raise BadInput(f"the animal template {vocab.animal_template!r} has {{color}} but the vocabulary gives "
                           "no animal_colors", "give animal_colors or drop {color} from the template")
        return DatasetSpec(templates=[vocab.animal_template], class_field="animal", classes=list(vocab.animals),
                           cycle=cycle, words={"target": "{animal}"}, **common)
    return DatasetSpec(templates=list(vocab.complex_templates), class_field="color", classes=list(vocab.colors),
                       constants={"noun": vocab.noun}, words={"target": "{color}"}, **common)
