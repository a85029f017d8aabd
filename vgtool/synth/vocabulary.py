"""The closed vocabulary of the synthetic referring-expression data, and the thresholds behind each word.

Every word a generated phrase can contain is defined here; ``grammar_markdown()`` writes the same
information out for the README.
"""

from __future__ import annotations

# Saturated colours, far apart in RGB. Backgrounds are kept desaturated (see render.py), so none of
# these clash with them. White, black and grey are left out on purpose: they are background colours.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 170, 70),
    "cyan": (30, 190, 220),
    "blue": (40, 90, 225),
    "purple": (150, 70, 200),
}

# Singular -> plural. The list order fixes the COCO category ids (1, 2, ...).
SHAPES: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "cross": "crosses",
}

# The noun used when a phrase does not name the shape ("the leftmost red shape", "all large shapes").
GENERIC_NOUN: tuple[str, str] = ("shape", "shapes")

# Size word -> range of an object's extent (longest side of its box) as a fraction of the shorter image
# side. The gap between the ranges keeps every size word unambiguous.
SIZES: dict[str, tuple[float, float]] = {
    "small": (0.12, 0.18),
    "large": (0.27, 0.36),
}
SIZE_THRESHOLD = 0.22  # extents below are "small", above are "large"; no object is generated near it

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

SIZE_SUPERLATIVES: tuple[str, ...] = ("largest", "smallest")
POSITION_SUPERLATIVES: tuple[str, ...] = ("leftmost", "rightmost", "topmost", "bottommost")
SUPERLATIVES: tuple[str, ...] = SIZE_SUPERLATIVES + POSITION_SUPERLATIVES

# A size superlative holds only if the winner beats every other candidate by this factor, in box area
# and in drawn shape area alike.
SUPERLATIVE_AREA_RATIO = 1.3
# A position superlative holds only if the winner's box centre is ahead of every other candidate's by
# this fraction of the image side along that axis.
SUPERLATIVE_POSITION_MARGIN = 0.08

PHRASE_KINDS: tuple[str, ...] = ("single", "multi", "none")


def size_word(extent_fraction: float) -> str:
    """The size word for an object whose box's longest side is ``extent_fraction`` of the image side."""
    return "small" if extent_fraction < SIZE_THRESHOLD else "large"


def grammar_markdown() -> str:
    """The vocabulary and the phrase grammar as a short markdown block (for the README)."""
    colours = ", ".join(COLOURS)
    shapes = ", ".join(f"{s} ({p})" for s, p in SHAPES.items())
    sizes = ", ".join(f"{w} ({lo:.2f}-{hi:.2f})" for w, (lo, hi) in SIZES.items())
    lines = [
        "**Vocabulary**",
        "",
        f"- colours: {colours}",
        f"- shapes (plural): {shapes}; generic noun: {GENERIC_NOUN[0]} ({GENERIC_NOUN[1]})",
        f"- sizes (longest box side / shorter image side): {sizes}",
        f"- relations: {', '.join(RELATIONS)}",
        f"- superlatives: {', '.join(SUPERLATIVES)}",
        "",
        "**Grammar**",
        "",
        "```",
        "phrase      := single | multi | none",
        "single      := 'the' [size] [colour] noun [relation ref]",
        "             | 'the' superlative [size] [colour] noun",
        "multi       := 'all' [size] [colour] nouns          (at least one attribute)",
        "none        := any single or multi form that matches no object",
        "ref         := 'the' [size] [colour] noun           (must match exactly one object)",
        "noun        := shape | 'shape'      nouns := plural shape | 'shapes'",
        "```",
        "",
        "**Meaning**",
        "",
        "- `the ...` must fit exactly one object (several: ambiguous, never generated); `all ...` fits "
        "every match.",
        "- `A left of B`: A's box right edge < B's box left edge (strict); likewise `right of`, `above`,"
        " `below`.",
        f"- `largest` / `smallest`: the winner beats every other candidate by >= {SUPERLATIVE_AREA_RATIO}x "
        "in both box area and shape area, else the phrase is ambiguous and never generated.",
        "- `leftmost` / `rightmost` / `topmost` / `bottommost`: the winner's box centre leads every other "
        f"candidate by >= {SUPERLATIVE_POSITION_MARGIN:.0%} of the image side.",
        "- A size word cannot be combined with `largest` / `smallest`.",
        "- Kinds: `single` denotes exactly one object, `multi` two or more, `none` zero. Most `none` "
        "phrases are hard negatives: words that all occur in the image but not together, or a false "
        "relation between existing objects.",
    ]
    return "\n".join(lines)
