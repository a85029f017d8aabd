"""The phrase semantics: resolve on hand-built scenes, query validation, the parser, and generated phrases."""

from __future__ import annotations

import numpy as np
import pytest

from vgtool.synth.parse import PhraseParseError, parse_phrase
from vgtool.synth.phrases import generate_phrases
from vgtool.synth.query import AmbiguousQueryError, Query, resolve, to_text
from vgtool.synth.scene import Scene, make_object, sample_scene
from vgtool.synth.vocabulary import COLOURS, RELATIONS, SHAPES, SIZES, SUPERLATIVES, grammar_markdown

SIDE = 160


def _scene(*specs: tuple[str, str, float, float, float]) -> Scene:
    """Objects from ``(shape, colour, centre_x, centre_y, extent)``, unrotated, in drawing order."""
    objects = [
        make_object(shape, colour, (cx, cy), extent, 0.0, z, SIDE)
        for z, (shape, colour, cx, cy, extent) in enumerate(specs)
    ]
    return Scene(width=SIDE, height=SIDE, objects=tuple(objects))


# 0 small red circle (upper left), 1 large blue square (upper right), 2 small red circle (lower left),
# 3 large green star (lower right), 4 small green triangle (middle left).
MIXED = _scene(
    ("circle", "red", 30, 40, 20),
    ("square", "blue", 100, 40, 50),
    ("circle", "red", 30, 120, 20),
    ("star", "green", 110, 120, 50),
    ("triangle", "green", 60, 80, 22),
)
# Two squares whose boxes touch at x = 40: neither is strictly left of the other.
TOUCHING = _scene(("square", "red", 25, 25, 30), ("square", "blue", 55, 25, 30))
# The star's box is 1.5x the square's, but the square covers more pixels: no clear "largest".
DISAGREEING_SIZES = _scene(("square", "red", 40, 40, 40), ("star", "red", 110, 110, 50))


def _squares(second_extent: float) -> Scene:
    return _scene(("square", "red", 30, 30, 20), ("square", "blue", 100, 100, second_extent))


AMBIGUOUS = AmbiguousQueryError


@pytest.mark.parametrize(
    ("scene", "phrase", "expected"),
    [
        (MIXED, "the blue square", [1]),
        (MIXED, "the large blue shape", [1]),
        (MIXED, "the red circle", AMBIGUOUS),
        (MIXED, "all red circles", [0, 2]),
        (MIXED, "all green shapes", [3, 4]),
        (MIXED, "all small shapes", [0, 2, 4]),
        (MIXED, "the purple star", []),
        (MIXED, "all purple stars", []),
        (MIXED, "the small star", []),
        (MIXED, "the red circle above the green triangle", [0]),
        (MIXED, "the red circle below the green triangle", [2]),
        (MIXED, "the red circle left of the blue square", AMBIGUOUS),
        (MIXED, "the triangle left of the circle", AMBIGUOUS),
        (MIXED, "the blue square right of the green star", []),
        (MIXED, "the red circle left of the purple star", []),
        (MIXED, "the topmost red circle", [0]),
        (MIXED, "the bottommost red shape", [2]),
        (MIXED, "the leftmost red circle", AMBIGUOUS),
        (MIXED, "the largest green shape", [3]),
        (MIXED, "the smallest green shape", [4]),
        (MIXED, "the largest shape", AMBIGUOUS),
        (MIXED, "the smallest shape", AMBIGUOUS),
        (MIXED, "the rightmost shape", AMBIGUOUS),
        (MIXED, "the leftmost green shape", [4]),
        (MIXED, "the largest blue square", [1]),
        (TOUCHING, "the red square left of the blue square", []),
        (TOUCHING, "the blue square right of the red square", []),
        (TOUCHING, "the leftmost square", [0]),
        (DISAGREEING_SIZES, "the largest shape", AMBIGUOUS),
        (DISAGREEING_SIZES, "the smallest shape", AMBIGUOUS),
        (_squares(22.5), "the largest square", AMBIGUOUS),
        (_squares(23.0), "the largest square", [1]),
        (_squares(23.0), "the smallest square", [0]),
    ],
)
def test_resolve_hand_built_scenes(scene: Scene, phrase: str, expected: list[int] | type) -> None:
    query = parse_phrase(phrase)
    if isinstance(expected, list):
        assert resolve(query, scene) == expected
    else:
        with pytest.raises(expected):
            resolve(query, scene)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"colour": "pink"}, "unknown colour"),
        ({"shape": "hexagon"}, "unknown shape"),
        ({"size": "medium"}, "unknown size"),
        ({"size": "small", "superlative": "largest"}, "cannot be combined"),
        ({"plural": True, "superlative": "leftmost"}, "singular"),
        ({"superlative": "biggest"}, "unknown superlative"),
        ({"relation": "left of"}, "go together"),
        ({"relation": "near", "reference": Query(shape="star")}, "unknown relation"),
        ({"plural": True, "relation": "above", "reference": Query(shape="star")}, "singular"),
        ({"relation": "above", "reference": Query(shape="star", plural=True)}, "attribute-only"),
    ],
)
def test_query_rejects_invalid_combinations(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Query(**kwargs)


@pytest.mark.parametrize(
    "query",
    [
        Query(shape="circle"),
        Query(size="small", colour="red", shape="circle"),
        Query(colour="blue"),
        Query(size="large", plural=True),
        Query(colour="orange", shape="cross", plural=True),
        Query(superlative="leftmost", colour="red"),
        Query(superlative="largest", shape="triangle"),
        Query(superlative="bottommost", size="small", colour="cyan", shape="star"),
        Query(
            colour="blue", shape="square", relation="left of", reference=Query(colour="green", shape="star")
        ),
        Query(size="small", relation="right of", reference=Query(shape="triangle")),
        Query(shape="star", relation="below", reference=Query(size="large", colour="purple", shape="cross")),
    ],
)
def test_parse_inverts_to_text(query: Query) -> None:
    assert parse_phrase(to_text(query)) == query


@pytest.mark.parametrize(
    "phrase",
    [
        "",
        "the red",
        "a red circle",
        "the red circles",
        "all red circle",
        "the circle red",
        "the largest small circle",
        "all leftmost circles",
        "the red circle near the blue square",
        "the red circle left of all squares",
        "the red circle left of the leftmost square",
        "the circle above the star below the square",
        "the circle extra",
        "the pink circle",
    ],
)
def test_parse_rejects_phrases_outside_the_grammar(phrase: str) -> None:
    with pytest.raises(PhraseParseError):
        parse_phrase(phrase)


def test_generated_phrases_mean_what_they_claim() -> None:
    """Every generated phrase, parsed back from its text alone, denotes exactly its objects."""
    counts = {"single": 0, "multi": 0, "none": 0}
    for index in range(40):
        rng = np.random.default_rng(index)
        scene = sample_scene(rng, SIDE, SIDE)
        phrases = generate_phrases(scene, rng, 4)
        assert len({p.text for p in phrases}) == len(phrases)
        for phrase in phrases:
            assert parse_phrase(phrase.text) == phrase.query
            assert tuple(resolve(parse_phrase(phrase.text), scene)) == phrase.object_indices
            size = len(phrase.object_indices)
            assert {"single": size == 1, "multi": size >= 2, "none": size == 0}[phrase.kind]
            counts[phrase.kind] += 1
    assert all(counts.values()), counts


def test_grammar_markdown_names_every_word() -> None:
    text = grammar_markdown()
    words = [*COLOURS, *SHAPES.values(), *SIZES, *RELATIONS, *SUPERLATIVES]
    assert [w for w in words if w not in text] == []


def test_scene_round_trips_through_dict() -> None:
    scene = sample_scene(np.random.default_rng(7), SIDE, SIDE)
    assert Scene.from_dict(scene.to_dict()) == scene
