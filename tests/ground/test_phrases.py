from __future__ import annotations

import pytest

from vgtool.errors import InputError
from vgtool.ground.phrases import PhraseSpec, build_ontology, parse_phrase


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("red car", PhraseSpec("red car", "red car")),
        ("red car=car", PhraseSpec("red car", "car")),
        ("  red   car = car ", PhraseSpec("red car", "car")),
        ("a=b=c", PhraseSpec("a=b", "c")),
        ("café au lait", PhraseSpec("café au lait", "café au lait")),
    ],
)
def test_parse_phrase(text, spec):
    assert parse_phrase(text) == spec


@pytest.mark.parametrize("text", ["", "   ", "=car", "red car="])
def test_bad_phrases(text):
    with pytest.raises(InputError):
        build_ontology([text])


def test_ontology_maps_phrases_to_categories(tmp_path):
    file = tmp_path / "phrases.txt"
    file.write_text("# pets\ndog\ncat=pet\n\n")
    ontology = build_ontology(["red car=car", "blue car=car", "dog"], [file])
    assert [p.text for p in ontology.phrases] == ["red car", "blue car", "dog", "cat"]
    assert ontology.categories == ("car", "dog", "pet")
    assert [ontology.category_id(i) for i in range(4)] == [1, 1, 2, 3]


def test_no_phrases():
    with pytest.raises(InputError, match="no phrases"):
        build_ontology([])
