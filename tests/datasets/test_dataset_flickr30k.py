from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vgtool.datasets.flickr30k import load_flickr30k, parse_caption
from vgtool.errors import InputError

SENTENCES = {
    "1000": (
        "[/EN#18/people A man] in [/EN#19/clothing an orange hat] looks at [/EN#0/notvisual something] .\n"
        "[/EN#18/people The man] wears [/EN#20/clothing a scarf] in [/EN#21/scene the street] "
        "with [/EN#22/people/other two kids] .\n"
    ),
    "2000": "[/EN#5/animals A dog] runs .\n",
}


def _object(names: list[int], box: tuple[int, int, int, int] | None = None, scene: int = 0) -> str:
    name_xml = "".join(f"<name>{name}</name>" for name in names)
    if box is None:
        return f"<object>{name_xml}<nobndbox>1</nobndbox><scene>{scene}</scene></object>"
    xmin, ymin, xmax, ymax = box
    return (
        f"<object>{name_xml}<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


ANNOTATIONS = {
    "1000": [
        _object([18], (1, 1, 100, 200)),
        _object([19], (50, 60, 70, 80)),
        _object([20]),  # nobndbox
        _object([21], scene=1),  # scene only
        _object([22, 23], (201, 11, 250, 60)),  # one box, two entities
        _object([22], (301, 21, 350, 70)),
    ],
    "2000": [_object([5], (11, 21, 30, 40))],
}


def write_flickr(root: Path, splits: dict[str, str] | None = None) -> Path:
    (root / "Sentences").mkdir(parents=True)
    (root / "Annotations").mkdir()
    for image_id, text in SENTENCES.items():
        (root / "Sentences" / f"{image_id}.txt").write_text(text, encoding="utf-8")
    for image_id, objects in ANNOTATIONS.items():
        xml = (
            f"<annotation><filename>{image_id}.jpg</filename><size><width>500</width><height>333</height>"
            f"<depth>3</depth></size>{''.join(objects)}</annotation>"
        )
        (root / "Annotations" / f"{image_id}.xml").write_text(xml, encoding="utf-8")
    for split, ids in (splits or {"train": "1000\n", "val": "", "test": "2000\n"}).items():
        (root / f"{split}.txt").write_text(ids)
    return root


def test_train_samples(tmp_path: Path) -> None:
    samples = load_flickr30k(write_flickr(tmp_path / "flickr"), "train")
    # "something" is non-visual, "a scarf" has no box, "the street" is scene-only.
    assert [s.phrase for s in samples] == ["A man", "an orange hat", "The man", "two kids"]
    man, hat, the_man, kids = samples
    np.testing.assert_array_equal(man.boxes_xyxy, [[0, 0, 100, 200]])  # 1-based inclusive -> 0-based xyxy
    np.testing.assert_array_equal(hat.boxes_xyxy, [[49, 59, 70, 80]])
    np.testing.assert_array_equal(the_man.boxes_xyxy, man.boxes_xyxy)
    np.testing.assert_array_equal(kids.boxes_xyxy, [[200, 10, 250, 60], [300, 20, 350, 70]])
    assert (man.image_id, man.width, man.height, man.category) == (1000, 500, 333, "people")
    assert man.image_path == tmp_path / "flickr" / "flickr30k-images" / "1000.jpg"
    assert [s.sample_id for s in samples] == ["1000_0_0", "1000_0_1", "1000_1_0", "1000_1_3"]
    assert hat.meta == {
        "entity_id": 19,
        "entity_types": ["clothing"],
        "caption": "A man in an orange hat looks at something .",
        "caption_index": 0,
        "span": (9, 22),
    }
    assert kids.meta["entity_types"] == ["people", "other"]
    caption = kids.meta["caption"]
    assert caption[slice(*kids.meta["span"])] == "two kids"


@pytest.mark.parametrize(
    ("split", "image_ids"), [("train", [1000]), ("val", []), ("test", [2000]), (None, [1000, 2000])]
)
def test_split_filtering(tmp_path: Path, split: str | None, image_ids: list[int]) -> None:
    samples = load_flickr30k(write_flickr(tmp_path), split, image_root=tmp_path / "images")
    assert sorted({s.image_id for s in samples}) == image_ids
    assert all(s.image_path == tmp_path / "images" / f"{s.image_id}.jpg" for s in samples)


@pytest.mark.parametrize(
    ("line", "caption", "mentions"),
    [
        ("plain text .", "plain text .", []),
        ("[/EN#1/people Two men] sit", "Two men sit", [(1, ("people",), "Two men", (0, 7))]),
        (
            "a [/EN#2/bodyparts/other hand] and [/EN#0/notvisual it]",
            "a hand and it",
            [(2, ("bodyparts", "other"), "hand", (2, 6)), (0, ("notvisual",), "it", (11, 13))],
        ),
    ],
)
def test_parse_caption(line: str, caption: str, mentions: list[tuple]) -> None:
    parsed_caption, parsed = parse_caption(line)
    assert parsed_caption == caption
    assert [(m.entity_id, m.entity_types, m.phrase, m.span) for m in parsed] == mentions


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ({"train.txt": None}, r"train\.txt: cannot read the 'train' split list"),
        ({"Annotations/1000.xml": None}, r"1000\.xml: cannot read"),
        ({"Sentences/1000.txt": None}, r"1000\.txt: cannot read"),
        ({"Annotations/1000.xml": "<annotation><size>"}, r"1000\.xml: not a Flickr30k Entities annotation"),
        ({"Annotations/1000.xml": "<annotation/>"}, r"1000\.xml: not a Flickr30k Entities annotation"),
        (
            {
                "Annotations/1000.xml": "<annotation><size><width>5</width><height>5</height></size>"
                + _object([18], (50, 1, 10, 20))
                + "</annotation>"
            },
            r"1000\.xml: not a Flickr30k Entities annotation: bad bndbox xmin=50 ymin=1 xmax=10 ymax=20",
        ),
        (
            {"Sentences/1000.txt": "[/EN#18/people A man in a hat\n"},
            r"1000\.txt: caption 1: malformed mention",
        ),
        ({"Sentences": None}, r"not a Flickr30k Entities folder: needs Sentences/ and Annotations/"),
    ],
)
def test_bad_data(tmp_path: Path, damage: dict[str, str | None], match: str) -> None:
    root = write_flickr(tmp_path)
    for name, text in damage.items():
        if text is not None:
            (root / name).write_text(text)
        elif (root / name).is_dir():
            for child in (root / name).iterdir():
                child.unlink()
            (root / name).rmdir()
        else:
            (root / name).unlink()
    with pytest.raises(InputError, match=match):
        load_flickr30k(root, "train")
