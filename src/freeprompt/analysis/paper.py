"""The paper's printed probing results (Liu et al., CVPR 2024, supplement Tables 8 and 9: SD1.x, the paper's
vocabulary, test accuracy as fractions per class over the 16 layers in forward order, then the row's average), and
the comparison of a run's table with them. Tables 6 and 7 are named in the paper but their numbers are not printed.

A run is compared only where the comparison means something: an SD1.x UNet (16 self/cross layers, 768-wide text
conditioning), the ``paper`` vocabulary, and the same dataset and word as the paper's table.
"""

from __future__ import annotations

import math

LAYERS = 16

# (train dataset, test dataset, word) -> (title, {class: "16 layer values, then Avg."})
PAPER_TABLES = {
    ("self_color", None, "target"): ("Table 8 (self-attention, colours)", {
        "green": "0.00 0.12 0.00 0.00 0.00 0.00 0.00 0.03 0.05 0.00 0.12 0.05 0.00 0.00 0.00 0.12 0.03",
        "white": "0.00 0.33 0.00 0.00 0.53 0.05 0.45 0.68 0.30 0.55 0.07 0.03 0.00 0.15 0.00 0.25 0.21",
        "purple": "0.00 0.03 0.00 0.00 0.28 0.60 0.00 0.07 0.05 0.35 0.10 0.07 0.03 0.50 0.00 0.00 0.13",
        "brown": "0.00 0.10 0.00 0.00 0.00 0.00 0.05 0.03 0.05 0.00 0.17 0.17 0.05 0.03 0.00 0.10 0.05",
        "blue": "0.72 0.07 0.57 0.55 0.10 0.00 0.30 0.05 0.12 0.05 0.28 0.33 0.65 0.00 0.35 0.05 0.26",
        "orange": "0.00 0.00 0.00 0.00 0.00 0.00 0.03 0.03 0.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00",
        "black": "0.00 0.35 0.03 0.03 0.07 0.00 0.33 0.05 0.15 0.07 0.17 0.20 0.10 0.25 0.10 0.28 0.14",
        "pink": "0.35 0.20 0.65 0.55 0.17 0.03 0.00 0.38 0.47 0.28 0.45 0.50 0.57 0.03 0.80 0.35 0.36",
        "yellow": "0.00 0.00 0.00 0.00 0.03 0.42 0.00 0.15 0.07 0.05 0.05 0.00 0.03 0.30 0.15 0.07 0.08",
        "red": "0.00 0.00 0.00 0.00 0.00 0.15 0.33 0.03 0.28 0.20 0.05 0.00 0.03 0.20 0.00 0.10 0.08",
    }),
    ("self_animal", None, "target"): ("Table 8 (self-attention, animals)", {
        "dog": "0.47 0.38 0.53 0.23 0.55 0.60 0.50 0.53 0.78 0.60 0.57 0.53 0.57 0.47 0.38 0.38 0.50",
        "giraffe": "0.28 0.47 0.47 0.60 0.68 0.62 0.75 0.60 0.78 0.72 0.62 0.57 0.55 0.68 0.42 0.57 0.59",
        "horse": "0.12 0.20 0.50 0.38 0.70 0.70 0.40 0.80 0.82 0.65 0.70 0.68 0.55 0.53 0.30 0.28 0.52",
        "lion": "0.07 0.17 0.38 0.38 0.20 0.15 0.35 0.28 0.17 0.23 0.40 0.47 0.42 0.33 0.35 0.25 0.29",
        "rabbit": "0.30 0.30 0.25 0.33 0.23 0.20 0.25 0.17 0.20 0.23 0.23 0.20 0.30 0.42 0.28 0.28 0.26",
        "sheep": "0.17 0.23 0.53 0.55 0.33 0.45 0.07 0.38 0.25 0.45 0.55 0.62 0.42 0.53 0.38 0.25 0.38",
        "cat": "0.07 0.17 0.07 0.17 0.20 0.15 0.12 0.23 0.28 0.12 0.25 0.33 0.25 0.17 0.23 0.15 0.19",
        "monkey": "0.33 0.33 0.28 0.38 0.28 0.38 0.07 0.62 0.38 0.45 0.28 0.30 0.33 0.33 0.33 0.33 0.33",
        "leopard": "0.72 0.70 0.47 0.62 0.57 0.65 0.38 0.42 0.57 0.60 0.47 0.47 0.42 0.65 0.62 0.60 0.56",
        "tiger": "0.38 0.38 0.23 0.42 0.35 0.12 0.23 0.28 0.55 0.20 0.53 0.45 0.35 0.42 0.50 0.53 0.37",
    }),
    ("complex", None, "target"): ("Table 9 upper (cross-attention, complex templates)", {
        "green": "0.81 0.74 0.85 0.81 0.91 0.68 0.79 0.85 0.89 0.87 0.94 0.62 0.96 0.43 0.64 0.40 0.76",
        "white": "0.82 0.79 0.91 0.91 1.00 0.82 0.97 0.91 0.91 0.73 0.97 0.94 0.97 0.45 0.61 0.55 0.83",
        "purple": "0.98 0.65 1.00 0.86 0.98 0.95 0.79 0.93 0.95 0.93 0.91 0.79 0.98 0.47 0.35 0.72 0.83",
        "brown": "0.96 0.76 0.98 0.93 0.98 0.80 0.84 0.98 0.96 0.80 0.89 0.96 0.98 0.73 0.82 0.87 0.89",
        "blue": "0.89 0.62 0.95 0.59 0.86 0.95 0.70 1.00 0.97 0.62 0.73 0.89 1.00 0.16 0.59 0.68 0.76",
        "orange": "1.00 0.61 0.97 0.95 0.92 1.00 0.79 0.87 0.84 0.71 0.79 0.82 1.00 0.47 1.00 0.87 0.85",
        "black": "0.93 0.75 0.95 0.88 1.00 0.88 0.95 0.93 0.93 0.82 0.88 0.82 1.00 0.68 0.85 0.93 0.88",
        "pink": "0.90 0.02 0.88 0.98 0.93 0.95 0.88 0.85 0.93 0.98 0.95 0.76 0.98 0.27 0.66 0.66 0.79",
        "yellow": "0.89 0.56 0.89 0.78 1.00 0.75 0.92 0.94 0.86 0.69 0.81 0.86 0.92 0.33 0.58 0.47 0.77",
        "red": "0.93 0.00 0.90 0.75 0.93 0.95 0.88 0.90 0.97 0.80 0.85 0.75 1.00 0.60 0.53 0.70 0.78",
    }),
    ("self_complex", None, "target"): ("Table 9 lower (self-attention, complex templates)", {
        "green": "0.00 0.00 0.00 0.00 0.36 0.51 0.73 0.42 0.60 0.20 0.44 0.00 0.29 0.00 0.18 0.00 0.23",
        "white": "0.00 0.00 0.00 0.00 0.03 0.03 0.12 0.03 0.03 0.03 0.06 0.03 0.03 0.03 0.36 0.00 0.05",
        "purple": "0.00 0.00 0.00 0.02 0.00 0.00 0.00 0.00 0.00 0.02 0.02 0.16 0.07 0.00 0.19 0.00 0.03",
        "brown": "0.00 0.00 0.00 0.00 0.00 0.00 0.03 0.03 0.05 0.11 0.08 0.00 0.00 0.05 0.00 0.02 0.02",
        "blue": "0.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00",
        "orange": "0.00 0.00 0.00 0.00 0.00 0.00 0.03 0.00 0.00 0.42 0.19 0.00 0.00 0.00 0.08 0.00 0.05",
        "black": "0.00 0.00 0.00 0.00 0.03 0.03 0.12 0.07 0.07 0.07 0.10 0.00 0.03 0.00 0.03 0.00 0.03",
        "pink": "1.00 1.00 1.00 1.00 0.00 0.00 0.09 0.00 0.00 0.02 0.02 0.85 0.00 0.91 0.04 1.00 0.43",
        "yellow": "0.00 0.00 0.00 0.00 0.17 0.22 0.02 0.22 0.20 0.39 0.00 0.00 0.17 0.00 0.17 0.00 0.10",
        "red": "0.00 0.00 0.00 0.00 0.68 0.55 0.00 0.40 0.17 0.00 0.17 0.00 0.65 0.00 0.10 0.00 0.17",
    }),
}


def paper_table(result: dict) -> tuple[str, dict[str, list[float]]] | None:
    """The paper's ``(title, {class: [16 layers..., Avg.]})`` for a probing result, or None where the run is not
    comparable (another model family, vocabulary, dataset or word, or not 16 layers)."""
    train = result.get("train") or {}
    test = result.get("test") or {}
    key = (train.get("name"), test.get("name"), train.get("word"))
    if key not in PAPER_TABLES or train.get("family") != "sd1" or train.get("vocabulary") != "paper":
        return None
    if len(result.get("layers", ())) != LAYERS:
        return None
    title, rows = PAPER_TABLES[key]
    return title, {cls: [float(v) for v in values.split()] for cls, values in rows.items()}


def comparison_rows(header: list[str], rows: list[list], paper: dict[str, list[float]]) -> list[list]:
    """Our row, the paper's row and the difference (ours - paper) for every class both tables have; ``rows`` are
    ``accuracy_table``'s (fractions), compared over ``header``'s columns after the class (``Layer 1..16``, ``Avg.``)."""
    width = len(header) - 1
    out = []
    for row in rows:
        theirs = paper.get(row[0])
        if theirs is None:
            continue
        ours = list(row[1:1 + width])
        diff = [a - b if not math.isnan(a) else float("nan") for a, b in zip(ours, theirs)]
        out += [[row[0]] + ours, [f"{row[0]}, paper"] + theirs, [f"{row[0]}, difference"] + diff]
    return out


__all__ = ["LAYERS", "PAPER_TABLES", "comparison_rows", "paper_table"]
