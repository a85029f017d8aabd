"""The meaning of a phrase: a structured ``Query``, its canonical text, and ``resolve`` against a scene.

Singular queries ("the ...") must denote at most one object: when several objects fit, the phrase is
ambiguous and ``resolve`` raises ``AmbiguousQueryError``. Plural queries ("all ...") denote every match.
"""

from __future__ import annotations

from dataclasses import dataclass

from vgtool.synth.scene import Scene, SceneObject
from vgtool.synth.vocabulary import (
    COLOURS,
    GENERIC_NOUN,
    RELATIONS,
    SHAPES,
    SIZE_SUPERLATIVES,
    SIZES,
    SUPERLATIVE_AREA_RATIO,
    SUPERLATIVE_POSITION_MARGIN,
    SUPERLATIVES,
)


class AmbiguousQueryError(ValueError):
    """A singular phrase fits several objects, or a superlative has no clear winner."""


@dataclass(frozen=True)
class Query:
    """A referring expression over the closed vocabulary.

    Attributes:
        size, colour, shape: attribute words; ``None`` leaves that attribute open (shape ``None`` reads
            as the generic noun "shape").
        plural: "all ..." instead of "the ...".
        superlative: one of ``SUPERLATIVES``, picking one object among the attribute matches.
        relation: one of ``RELATIONS``; the target must stand in it to ``reference``.
        reference: the object the relation points to; a singular attribute-only query.
    """

    size: str | None = None
    colour: str | None = None
    shape: str | None = None
    plural: bool = False
    superlative: str | None = None
    relation: str | None = None
    reference: Query | None = None

    def __post_init__(self) -> None:
        if self.size is not None and self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}")
        if self.colour is not None and self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}")
        if self.shape is not None and self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.superlative is not None:
            if self.superlative not in SUPERLATIVES:
                raise ValueError(f"unknown superlative {self.superlative!r}")
            if self.plural or self.relation is not None:
                raise ValueError("a superlative query is singular and has no relation")
            if self.superlative in SIZE_SUPERLATIVES and self.size is not None:
                raise ValueError(f"{self.superlative!r} cannot be combined with the size word {self.size!r}")
        if (self.relation is None) != (self.reference is None):
            raise ValueError("relation and reference go together")
        if self.relation is not None:
            if self.relation not in RELATIONS:
                raise ValueError(f"unknown relation {self.relation!r}")
            if self.plural:
                raise ValueError("a relational query is singular")
            ref = self.reference
            assert ref is not None
            if ref.plural or ref.superlative is not None or ref.relation is not None:
                raise ValueError("a reference is a singular attribute-only query")

    @property
    def attributes(self) -> tuple[str | None, str | None, str | None]:
        """``(size, colour, shape)``."""
        return self.size, self.colour, self.shape

    @property
    def form(self) -> str:
        """``relation`` (picks its object by a relation to another), ``superlative``, or
        ``attributes`` (attribute words alone, singular or plural)."""
        if self.relation is not None:
            return "relation"
        if self.superlative is not None:
            return "superlative"
        return "attributes"


def to_text(query: Query) -> str:
    """The canonical phrase: determiner, superlative, size, colour, noun, then the relation."""
    words = ["all" if query.plural else "the"]
    if query.superlative is not None:
        words.append(query.superlative)
    words += [w for w in (query.size, query.colour) if w is not None]
    if query.shape is None:
        words.append(GENERIC_NOUN[1] if query.plural else GENERIC_NOUN[0])
    else:
        words.append(SHAPES[query.shape] if query.plural else query.shape)
    if query.relation is not None:
        assert query.reference is not None
        words += [query.relation, to_text(query.reference)]
    return " ".join(words)


def matches_attributes(query: Query, obj: SceneObject) -> bool:
    """Whether ``obj`` has every attribute the query names."""
    return (
        (query.size is None or query.size == obj.size)
        and (query.colour is None or query.colour == obj.colour)
        and (query.shape is None or query.shape == obj.shape)
    )


def relation_holds(relation: str, target_xyxy: tuple[float, ...], reference_xyxy: tuple[float, ...]) -> bool:
    """Whether the target box stands in ``relation`` to the reference box, strictly separated."""
    tx0, ty0, tx1, ty1 = target_xyxy
    rx0, ry0, rx1, ry1 = reference_xyxy
    if relation == "left of":
        return tx1 < rx0
    if relation == "right of":
        return tx0 > rx1
    if relation == "above":
        return ty1 < ry0
    if relation == "below":
        return ty0 > ry1
    raise ValueError(f"unknown relation {relation!r}")


def _score(superlative: str, obj: SceneObject) -> float:
    """Higher means more of the superlative (box area for sizes, box centre for positions)."""
    x0, y0, x1, y1 = obj.bbox_xyxy
    scores = {
        "largest": obj.bbox_area,
        "smallest": -obj.bbox_area,
        "leftmost": -(x0 + x1) / 2,
        "rightmost": (x0 + x1) / 2,
        "topmost": -(y0 + y1) / 2,
        "bottommost": (y0 + y1) / 2,
    }
    return scores[superlative]


def _clearly_beats(superlative: str, winner: SceneObject, other: SceneObject, scene: Scene) -> bool:
    """Whether ``winner`` leads ``other`` by the margin the vocabulary sets for this superlative."""
    ratio = SUPERLATIVE_AREA_RATIO
    if superlative == "largest":
        return winner.bbox_area >= ratio * other.bbox_area and winner.shape_area >= ratio * other.shape_area
    if superlative == "smallest":
        return other.bbox_area >= ratio * winner.bbox_area and other.shape_area >= ratio * winner.shape_area
    side = scene.width if superlative in ("leftmost", "rightmost") else scene.height
    lead = _score(superlative, winner) - _score(superlative, other)
    return lead >= SUPERLATIVE_POSITION_MARGIN * side


def resolve(query: Query, scene: Scene) -> list[int]:
    """Indices (into ``scene.objects``, ascending) of the objects the query denotes.

    Raises:
        AmbiguousQueryError: a singular query fits several objects, a superlative has no winner by the
            required margin, or the reference of a relation fits several objects.
    """
    objects = scene.objects
    indices = [i for i, o in enumerate(objects) if matches_attributes(query, o)]
    if query.relation is not None:
        assert query.reference is not None
        refs = resolve(query.reference, scene)
        if not refs:
            return []
        ref_xyxy, relation = objects[refs[0]].bbox_xyxy, query.relation
        indices = [i for i in indices if relation_holds(relation, objects[i].bbox_xyxy, ref_xyxy)]
    if query.superlative is not None and len(indices) > 1:
        superlative = query.superlative
        best = max(indices, key=lambda i: _score(superlative, objects[i]))
        rivals = [i for i in indices if i != best]
        if not all(_clearly_beats(superlative, objects[best], objects[i], scene) for i in rivals):
            raise AmbiguousQueryError(f"{to_text(query)!r}: no clear {superlative} object")
        indices = [best]
    if not query.plural and len(indices) > 1:
        raise AmbiguousQueryError(f"{to_text(query)!r} fits {len(indices)} objects")
    return indices
