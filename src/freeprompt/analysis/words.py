"""Vocabularies of the probing analysis: the paper's word lists and the shapes fixture world's.

The paper (supplement, section 7.1) probes 10 colours, 10 animals and, out of distribution, 100 objects and 12
complex templates. It prints the colours and animals whole, but only part of the objects (35 of 100) and of the
templates (6 of 12, and one more named in its text). The ``paper`` vocabulary uses the printed lists exactly and in
the printed order; where a list is printed only in part, the printed items come first and this project completes
the rest (``PAPER_PRINTED`` says how many items of each list are the paper's; reports say it too):

- ``PAPER_COLORS``: printed whole (red, blue, green, yellow, brown, pink, purple, black, white, orange).
- ``PAPER_ANIMALS``: printed whole (dog, giraffe, horse, lion, rabbit, sheep, cat, monkey, leopard, tiger).
- ``PAPER_OBJECTS``: the 35 printed objects, then 65 common concrete nouns completed by this project (rules: no
  colour names, so no "orange" the fruit, no word the printed part already has, one CLIP token where possible).
- ``COMPLEX_TEMPLATES``: the 6 printed templates and the one named in the paper's text ("a painting of a wooden
  {} car"), then 5 completed by this project in the same style; ``{noun}`` stands for the paper's "car".

The ``shapes`` vocabulary maps the same experiments onto the fixture model's world: colours are the world's
ten colours, the "car" of "a <color> car" is a circle, the objects are the other seven shapes, the "animals"
are the eight shapes (in "a <color> <shape> standing in the park", the colour cycling through the palette
as a nuisance factor, since the fixture model was trained on coloured captions), and the complex templates are
the world's single-object caption templates.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import BadInput

PAPER_COLORS = ("red", "blue", "green", "yellow", "brown", "pink", "purple", "black", "white", "orange")

PAPER_ANIMALS = ("dog", "giraffe", "horse", "lion", "rabbit", "sheep", "cat", "monkey", "leopard", "tiger")

PRINTED_OBJECTS = (  # the paper's printed part of its 100 objects, in its order
    "apple", "banana", "carrot", "dog", "flower", "giraffe", "hat", "car", "train", "bicycle", "yak", "acorn",
    "bear", "caterpillar", "turtle", "dandelion", "elephant", "feather", "grape", "hedgehog", "inchworm",
    "jackfruit", "kiwi", "lemon", "zebra", "mushroom", "otter", "peacock", "rose", "strawberry", "volcano",
    "watermelon", "xenops", "yucca", "cup",
)

COMPLETED_OBJECTS = (  # completed by this project: 65 common concrete nouns the printed part does not have
    "bus", "truck", "motorcycle", "airplane", "boat", "tractor", "chair", "table", "sofa", "bed", "desk", "bench",
    "lamp", "cabinet", "shelf", "mug", "bowl", "plate", "bottle", "teapot", "kettle", "fork", "spoon", "knife",
    "shirt", "dress", "jacket", "shoe", "boot", "scarf", "glove", "umbrella", "phone", "laptop", "camera",
    "television", "clock", "radio", "keyboard", "guitar", "piano", "drum", "cake", "pizza", "donut", "cookie",
    "pear", "tomato", "vase", "candle", "book", "pillow", "basket", "bucket", "box", "bag", "house", "door",
    "window", "fence", "tent", "balloon", "kite", "ball", "ladder",
)

PAPER_OBJECTS = PRINTED_OBJECTS + COMPLETED_OBJECTS

PRINTED_TEMPLATES = (  # the paper's six printed complex templates, then the one named in its text; car = {noun}
    "a photo of a {color} {noun} and a dog",
    "a photo of {color} {noun}",
    "the painting of a {color} {noun}",
    "a cool painting of an old {color} {noun}",
    "a man and a {color} {noun}",
    "a {color} {noun} and a dog",
    "a painting of a wooden {color} {noun}",
)

COMPLETED_TEMPLATES = (  # completed by this project in the same style
    "a {color} {noun} parked in the street",
    "a close-up photo of a {color} {noun}",
    "a woman standing next to a {color} {noun}",
    "an old photo of a {color} {noun} in the city",
    "a small {color} {noun} and a tree",
)

COMPLEX_TEMPLATES = PRINTED_TEMPLATES + COMPLETED_TEMPLATES

PAPER_PRINTED = {"colors": len(PAPER_COLORS), "animals": len(PAPER_ANIMALS), "objects": len(PRINTED_OBJECTS),
                 "complex_templates": len(PRINTED_TEMPLATES)}


@dataclass(frozen=True)
class Vocabulary:
    """Word lists and templates of the probing experiments (see ``datasets.build_spec``)."""

    name: str
    colors: tuple[str, ...]
    animals: tuple[str, ...]
    objects: tuple[str, ...]
    noun: str = "car"
    color_template: str = "a {color} {noun}"
    object_template: str = "a {color} {object}"
    animal_template: str = "a {animal} standing in the park"
    animal_colors: tuple[str, ...] = ()  # nuisance colours cycled through when animal_template has {color}
    complex_templates: tuple[str, ...] = field(default=COMPLEX_TEMPLATES)
    printed: dict = field(default_factory=dict)  # list name -> how many of its first items the paper printed

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for what, words in (("colour", self.colors), ("animal", self.animals), ("object", self.objects),
                            ("template", self.complex_templates)):
            check_word_list(words, what)
        clash = sorted(set(self.colors) & (set(self.objects) | set(self.animals) | {self.noun}))
        if clash:
            raise BadInput(f"the word(s) {', '.join(clash)} are both colours and objects/animals in vocabulary "
                           f"{self.name!r}", "a colour word may not name an object: remove it from one list")
        for template in self.complex_templates:
            if template.count("{color}") != 1 or template.count("{noun}") != 1:
                raise BadInput(f"complex template {template!r} must contain {{color}} and {{noun}} exactly once",
                               "write e.g. 'a photo of a {color} {noun}'")

    def with_lists(self, colors=None, animals=None, objects=None, noun=None) -> Vocabulary:
        """This vocabulary with some lists replaced (validated)."""
        changes = {}
        for key, value in (("colors", colors), ("animals", animals), ("objects", objects)):
            if value is not None:
                changes[key] = tuple(value)
        if noun is not None:
            changes["noun"] = noun
        printed = {key: n for key, n in self.printed.items() if key not in changes}
        return replace(self, printed=printed, **changes)

    def to_dict(self) -> dict:
        return {"name": self.name, "colors": list(self.colors), "animals": list(self.animals),
                "objects": list(self.objects), "noun": self.noun, "color_template": self.color_template,
                "object_template": self.object_template, "animal_template": self.animal_template,
                "animal_colors": list(self.animal_colors), "complex_templates": list(self.complex_templates),
                "printed": dict(self.printed)}

    def provenance(self) -> list[str]:
        """One line per list saying which items are the paper's and which this project completed."""
        lines = []
        for key, count in self.printed.items():
            total = len(getattr(self, key))
            what = key.replace("_", " ")
            lines.append(f"{what}: all {total} as printed in the paper" if count >= total else
                         f"{what}: the first {count} of {total} as printed in the paper, the other {total - count} "
                         "completed by freeprompt")
        return lines


def check_word_list(words, what: str = "word") -> tuple[str, ...]:
    """A list of distinct, non-empty words (duplicates are a one-line error naming them)."""
    words = tuple(str(w).strip() for w in words)
    if not words:
        raise BadInput(f"the {what} list is empty", f"give at least one {what}")
    if any(not w for w in words):
        raise BadInput(f"the {what} list has an empty entry", "remove empty entries")
    seen, dupes = set(), []
    for w in words:
        if w.lower() in seen and w not in dupes:
            dupes.append(w)
        seen.add(w.lower())
    if dupes:
        raise BadInput(f"the {what} list has duplicates: {', '.join(dupes)}", f"give each {what} once")
    return words


def read_word_list(spec: str, what: str = "word") -> tuple[str, ...]:
    """Words from ``a,b,c`` or from ``@file`` / a path to a file with one word per line (# comments)."""
    text = spec.strip()
    path = Path(text[1:] if text.startswith("@") else text)
    if text.startswith("@") or (path.suffix in (".txt", ".csv", ".list") and path.exists()):
        if not path.is_file():
            raise BadInput(f"word list file {path} does not exist", "give a file with one word per line")
        lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
        return check_word_list([line for line in lines if line], what)
    return check_word_list([w for w in text.split(",") if w.strip()] if text else [], what)


PAPER = Vocabulary(name="paper", colors=PAPER_COLORS, animals=PAPER_ANIMALS, objects=PAPER_OBJECTS,
                   printed=PAPER_PRINTED)


def _shapes_vocabulary() -> Vocabulary:
    from ..shapes.world import COLORS, SHAPES, TEMPLATES

    noun = "circle"
    singles = [t for key, t in TEMPLATES.items() if key not in ("simple", "pair") and "{shape2}" not in t]
    return Vocabulary(
        name="shapes",
        colors=tuple(COLORS),
        animals=tuple(SHAPES),
        objects=tuple(s for s in SHAPES if s != noun),
        noun=noun,
        color_template="a {color} {noun}",
        object_template="a {color} {object}",
        animal_template="a {color} {animal} standing in the park",
        animal_colors=tuple(COLORS),
        complex_templates=tuple(t.replace("{shape}", "{noun}") for t in singles),
    )


def get_vocabulary(name: str) -> Vocabulary:
    if name == "paper":
        return PAPER
    if name == "shapes":
        return _shapes_vocabulary()
    raise BadInput(f"unknown vocabulary {name!r}", "use 'paper' or 'shapes'")


__all__ = ["COMPLEX_TEMPLATES", "PAPER", "PAPER_ANIMALS", "PAPER_COLORS", "PAPER_OBJECTS", "PAPER_PRINTED",
           "PRINTED_OBJECTS", "PRINTED_TEMPLATES",
           "Vocabulary", "check_word_list", "get_vocabulary", "read_word_list"]
