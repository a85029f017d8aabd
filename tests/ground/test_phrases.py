from __future__ import annotations

import pytest

from vgtool.errors import InputError
from vgtool.ground.phrases import Category, PhraseSpec, build_ontology, parse_phrase


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
    assert [c.name for c in ontology.categories] == ["car", "dog", "pet"]
    assert [ontology.category_id(i) for i in range(4)] == [1, 1, 2, 3]


def test_no_phrases():
    with pytest.raises(InputError, match="no phrases"):
        build_ontology([])


def test_categories_file_pins_ids_and_names(tmp_path):
    coco = tmp_path / "dataset.json"
    coco.write_text(
        '{"categories": [{"id": 7, "name": "dog", "supercategory": "animal"}, {"id": 3, "name": "car"}]}'
    )
    ontology = build_ontology(["red car=car", "dog", "puppy=dog"], categories_file=coco)
    assert ontology.categories == (Category(3, "car", "object"), Category(7, "dog", "animal"))
    assert ontology.category_ids == [3, 7, 7]
    names = tmp_path / "names.txt"
    names.write_text("# classes\nperson\n\ncar\n")
    assert build_ontology(["car"], categories_file=names).category_ids == [2]
    assert [c.name for c in build_ontology(["car"], categories_file=names).categories] == ["person", "car"]


@pytest.mark.parametrize(
    ("content", "name", "error"),
    [
        ("person\ncar\n", "names.txt", r"class 'truck' \(of phrase 'truck'\) is not one of its 2 categories"),
        ("person\nperson\n", "names.txt", "category name 'person' appears more than once"),
        (
            '{"categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}',
            "c.json",
            "category id 1 appears",
        ),
        ('{"images": []}', "c.json", "not a COCO file with a 'categories' list"),
        ("# nothing\n", "names.txt", "no categories in the file"),
    ],
)
def test_bad_categories_files(tmp_path, content, name, error):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=error):
        build_ontology(["truck"], categories_file=path)
