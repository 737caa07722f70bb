"""Vocabularies of the probing analysis: the paper's word lists and the shapes fixture world's.

The paper (section 7.1) probes 10 colours, 10 animals and, out of distribution, 100 objects, and shows only
part of its object list. The lists here are this project's:

- ``PAPER_COLORS``: ten basic colour terms that are one CLIP token each (red, blue, green, yellow, brown, pink,
  purple, black, white, orange) — the same ten as the shapes world, so the two vocabularies share classes.
- ``PAPER_ANIMALS``: the ten animal categories of COCO (bird, cat, dog, horse, sheep, cow, elephant, bear,
  zebra, giraffe): common, visually distinct, each one CLIP token.
- ``PAPER_OBJECTS``: 100 common concrete nouns chosen for this project (the paper elides most of its list):
  ten groups of ten (vehicles, furniture, kitchenware, clothing, devices and instruments, food, household
  things, outdoor things, tools, small things and nature). Rules: no colour names (so no "orange" the fruit,
  which would put a second colour word in the prompt), no "car" (the in-distribution noun), no animals (the
  animal classes are a separate experiment), no duplicates. All but one are a single CLIP token ("scooter"
  is two: the recorder averages a word's sub-tokens, as it does for users' own multi-token words).
- ``COMPLEX_TEMPLATES``: twelve richer prompts around "<color> car" (the paper's complex-template experiment
  shows a few examples; these twelve are written in the same style for this project: the colour word early,
  then scene context; each has ``{color}`` and ``{noun}`` exactly once).

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

PAPER_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")

PAPER_OBJECTS = (
    # vehicles
    "bus", "truck", "bicycle", "motorcycle", "train", "airplane", "boat", "ship", "tractor", "scooter",
    # furniture
    "chair", "table", "sofa", "bed", "desk", "bench", "lamp", "cabinet", "shelf", "stool",
    # kitchenware
    "cup", "mug", "bowl", "plate", "bottle", "teapot", "kettle", "fork", "spoon", "knife",
    # clothing
    "hat", "shirt", "dress", "jacket", "shoe", "boot", "scarf", "glove", "sock", "umbrella",
    # devices and instruments
    "phone", "laptop", "camera", "television", "clock", "radio", "keyboard", "guitar", "piano", "drum",
    # food
    "apple", "banana", "lemon", "strawberry", "cake", "pizza", "donut", "cookie", "pear", "tomato",
    # household things
    "vase", "candle", "book", "pillow", "blanket", "towel", "basket", "bucket", "box", "bag",
    # outdoor things
    "house", "door", "window", "fence", "tent", "balloon", "kite", "ball", "flag", "mailbox",
    # tools
    "hammer", "wrench", "scissors", "pencil", "brush", "ladder", "shovel", "key", "ring", "bell",
    # small things and nature
    "backpack", "suitcase", "helmet", "toothbrush", "crown", "feather", "flower", "tree", "rock", "skateboard",
)

COMPLEX_TEMPLATES = (
    "a photo of a {color} {noun}",
    "a {color} {noun} on the road",
    "a {color} {noun} parked in the street",
    "a picture of a {color} {noun} in the city",
    "there is a {color} {noun} next to the house",
    "a big {color} {noun} in front of a building",
    "a small {color} {noun} in the snow",
    "an old {color} {noun} in the desert",
    "a {color} {noun} driving on the highway",
    "a close-up photo of a {color} {noun}",
    "a {color} {noun} under a tree at sunset",
    "a painting of a {color} {noun}",
)


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

    def with_lists(self, colors=None, animals=None, objects=None, noun=None) -> "Vocabulary":
        """This vocabulary with some lists replaced (validated)."""
        changes = {}
        for key, value in (("colors", colors), ("animals", animals), ("objects", objects)):
            if value is not None:
                changes[key] = tuple(value)
        if noun is not None:
            changes["noun"] = noun
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {"name": self.name, "colors": list(self.colors), "animals": list(self.animals),
                "objects": list(self.objects), "noun": self.noun, "color_template": self.color_template,
                "object_template": self.object_template, "animal_template": self.animal_template,
                "animal_colors": list(self.animal_colors), "complex_templates": list(self.complex_templates)}


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


PAPER = Vocabulary(name="paper", colors=PAPER_COLORS, animals=PAPER_ANIMALS, objects=PAPER_OBJECTS)


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


VOCABULARIES = ("paper", "shapes")

__all__ = ["COMPLEX_TEMPLATES", "PAPER", "PAPER_ANIMALS", "PAPER_COLORS", "PAPER_OBJECTS", "VOCABULARIES",
           "Vocabulary", "check_word_list", "get_vocabulary", "read_word_list"]
