"""The dataset writer: determinism, the COCO-with-phrases layout, phrase correctness, boxes vs pixels, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from vgtool.errors import ConfigError
from vgtool.synth import generate_dataset, generate_example, parse_phrase, resolve
from vgtool.synth.generate import split_sizes
from vgtool.synth.scene import Scene
from vgtool.synth.vocabulary import COLOURS, SHAPES

N_IMAGES, SEED = 40, 0


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _scenes(root: Path, split: str) -> dict[int, Scene]:
    lines = (root / "scenes" / f"{split}.jsonl").read_text().splitlines()
    return {(row := json.loads(line))["image_id"]: Scene.from_dict(row) for line in lines}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth")
    return root, generate_dataset(root, N_IMAGES, SEED)


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "a", 6, 3)
    generate_dataset(tmp_path / "b", 6, 3, workers=2)
    generate_dataset(tmp_path / "c", 6, 4)
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert a["train.json"] != c["train.json"]
    assert a["images/train/000001.png"] != c["images/train/000001.png"]


def test_any_image_can_be_regenerated_alone(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    _, image = generate_example(SEED, "val", 2)
    on_disk = np.asarray(Image.open(root / "images" / "val" / "000003.png"))
    assert np.array_equal(np.asarray(image), on_disk)


def test_layout_ids_and_counts(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    images_per_split = {split: counts["images"] for split, counts in summary.items()}
    assert images_per_split == {"train": 32, "val": 4, "test": 4}
    for split, counts in summary.items():
        coco = json.loads((root / f"{split}.json").read_text())
        assert coco["info"] == {"description": "vgtool synth", "version": 1, "seed": SEED, "split": split}
        assert [c["name"] for c in coco["categories"]] == list(SHAPES)
        assert [c["id"] for c in coco["categories"]] == list(range(1, len(SHAPES) + 1))
        for key in ("images", "annotations", "phrases"):
            assert [row["id"] for row in coco[key]] == list(range(1, len(coco[key]) + 1))
        assert all((root / image["file_name"]).is_file() for image in coco["images"])
        annotations = {a["id"]: a for a in coco["annotations"]}
        claimed = [i for p in coco["phrases"] for i in p["annotation_ids"]]
        assert sorted(claimed) == sorted(annotations)  # one annotation per (phrase, object) pair
        for phrase in coco["phrases"]:
            for annotation_id in phrase["annotation_ids"]:
                annotation = annotations[annotation_id]
                assert annotation["image_id"] == phrase["image_id"]
                assert annotation["phrase"] == phrase["phrase"]
                w, h = annotation["bbox"][2:]
                assert annotation["area"] == pytest.approx(w * h, abs=0.01)
        assert counts["phrases"] == len(coco["phrases"])
        assert counts["annotations"] == len(coco["annotations"])
        assert counts["single"] + counts["multi"] + counts["none"] == counts["phrases"]


def test_every_phrase_parses_back_to_exactly_its_boxes(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    forms = set()
    for split in summary:
        coco = json.loads((root / f"{split}.json").read_text())
        scenes = _scenes(root, split)
        annotations = {a["id"]: a for a in coco["annotations"]}
        for phrase in coco["phrases"]:
            scene = scenes[phrase["image_id"]]
            query = parse_phrase(phrase["phrase"])
            assert phrase["form"] == query.form, phrase  # the form stated is the phrase's own
            forms.add(phrase["form"])
            resolved = resolve(query, scene)
            expected_xywh = sorted(annotations[i]["bbox"] for i in phrase["annotation_ids"])
            resolved_xywh = []
            for index in resolved:
                x0, y0, x1, y1 = scene.objects[index].bbox_xyxy
                resolved_xywh.append([x0, y0, x1 - x0, y1 - y0])
            assert len(resolved_xywh) == len(expected_xywh)
            assert np.allclose(
                np.reshape(sorted(resolved_xywh), (-1, 4)), np.reshape(expected_xywh, (-1, 4)), atol=0.011
            )
            n_boxes = len(phrase["annotation_ids"])
            assert {"single": n_boxes == 1, "multi": n_boxes >= 2, "none": n_boxes == 0}[phrase["kind"]]
    assert forms == {"attributes", "superlative", "relation"}


def test_kind_ratios_follow_the_weights(dataset: tuple[Path, dict]) -> None:
    _, summary = dataset
    total = {kind: sum(counts[kind] for counts in summary.values()) for kind in ("single", "multi", "none")}
    n = sum(total.values())
    assert n >= 0.95 * 4 * N_IMAGES
    assert 0.45 < total["single"] / n < 0.75
    assert 0.1 < total["multi"] / n < 0.3
    assert 0.1 < total["none"] / n < 0.3


def test_boxes_lie_inside_and_cover_the_drawn_colour(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    palette_names = list(COLOURS)
    palette = np.array([COLOURS[name] for name in palette_names], dtype=np.float32)
    checked = 0
    for split in summary:
        for image_id, scene in _scenes(root, split).items():
            pixels = np.asarray(Image.open(root / "images" / split / f"{image_id:06d}.png"), dtype=np.float32)
            assert pixels.shape == (scene.height, scene.width, 3)
            for obj in scene.objects:
                x0, y0, x1, y1 = obj.bbox_xyxy
                assert 0 <= x0 < x1 <= scene.width and 0 <= y0 < y1 <= scene.height
                assert max(x1 - x0, y1 - y0) >= 0.12 * min(scene.width, scene.height) - 0.01
                if obj.visible_fraction < 1.0:
                    continue
                cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
                centre = np.median(pixels[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3), axis=0)
                nearest = palette_names[int(np.argmin(((palette - centre) ** 2).sum(axis=1)))]
                assert nearest == obj.colour, (split, image_id, obj)
                checked += 1
    assert checked > 100


def test_split_override_writes_one_split(tmp_path: Path) -> None:
    summary = generate_dataset(tmp_path, 5, 9, split_override="test")
    assert summary["test"]["images"] == 5 and list(summary) == ["test"]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["test.json"]
    assert len(list((tmp_path / "images" / "test").glob("*.png"))) == 5


@pytest.mark.parametrize(
    ("n_images", "splits", "expected"),
    [
        (10, (("train", 0.8), ("val", 0.1), ("test", 0.1)), [8, 1, 1]),
        (7, (("train", 0.8), ("val", 0.1), ("test", 0.1)), [5, 1, 1]),
        (9, (("train", 0.8), ("val", 0.1), ("test", 0.1)), [7, 1, 1]),
        (3, (("a", 1.0), ("b", 1.0), ("c", 1.0)), [1, 1, 1]),
        (0, (("train", 1.0),), [0]),
    ],
)
def test_split_sizes(n_images: int, splits: tuple, expected: list[int]) -> None:
    assert [count for _, count in split_sizes(n_images, splits)] == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": (32, 32)}, "at least"),
        ({"phrases_per_image": 0}, "phrases_per_image"),
        ({"seed": -1}, "seed"),
        ({"kind_weights": (("single", 1.0), ("maybe", 1.0))}, "phrase kinds"),
        ({"splits": (("train", -1.0),)}, "split fractions"),
    ],
)
def test_bad_options_raise_config_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        generate_dataset(tmp_path, 2, **{"seed": 0, **kwargs})


def test_synth_does_not_import_torch() -> None:
    code = "import sys, vgtool.synth, vgtool.cli.synth; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_generates_a_dataset(tmp_path: Path) -> None:
    from vgtool.cli.synth import synth_cli

    app = typer.Typer()
    app.command()(synth_cli)
    result = CliRunner().invoke(
        app, ["--out", str(tmp_path), "--n", "3", "--seed", "1", "--split", "test", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "test: 3 images" in result.output
    coco = json.loads((tmp_path / "test.json").read_text())
    assert len(coco["images"]) == 3
