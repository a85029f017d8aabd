"""The shared prediction loop speaks only to the Grounder protocol: a grounder defined here, with no
model behind it, goes through ``ground`` (journal, resume, bad files, writers) and evaluation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import random_image
from vgtool.data.image_dataset import ImageBatch
from vgtool.datasets.sample import GroundingSample
from vgtool.evaluation.predict import predict_samples
from vgtool.ground.pipeline import GroundConfig, ground
from vgtool.grounders.base import EncodedPhrases, no_measure
from vgtool.groundings import Groundings


def _mean_colour(image: Image.Image) -> torch.Tensor:
    """A picklable transform: each image becomes its mean colour, ``[3, 1, 1]`` uint8."""
    return torch.from_numpy(np.asarray(image).reshape(-1, 3).mean(0).astype(np.uint8)).view(3, 1, 1)


class BoxPerPhrase:
    """For phrase p, one box covering the left ``1/(p+1)`` of the image, scored by the image's mean
    red (so scores differ per image) and suppressed below the threshold."""

    family = "fake"
    source = "fake:box-per-phrase"
    device = torch.device("cpu")
    default_threshold = 0.0
    image_transform = staticmethod(_mean_colour)

    def __init__(self) -> None:
        self.encoded: list[tuple[str, ...]] = []
        self.predicted_images = 0

    def identity(self) -> dict[str, str]:
        return {"model": "fake-1", "model_config": "none"}

    def settings(self) -> dict[str, object]:
        return {"fake": True}

    def per_image_memory_bytes(self, num_phrases: int) -> int:
        return 1000 * (1 + num_phrases)

    def encode_phrases(self, phrases: Sequence[str], measure=no_measure) -> EncodedPhrases:
        self.encoded.append(tuple(phrases))
        return EncodedPhrases(texts=tuple(phrases), features=len(phrases))

    def predict(self, batch: ImageBatch, phrases, *, postprocess, pairs=None, measure=no_measure):
        self.predicted_images += len(batch.indices)
        out = []
        for b in range(len(batch.indices)):
            width, height = batch.sizes_wh[b].tolist()
            score = float(batch.pixels[b, 0, 0, 0]) / 255
            ids = range(phrases.features) if pairs is None else pairs[b]
            ids = [p for p in ids if score >= postprocess.threshold]
            out.append(
                Groundings(
                    xyxy=np.array([[0, 0, width / (p + 1), height] for p in ids], np.float32).reshape(-1, 4),
                    scores=np.full(len(ids), score, np.float32),
                    phrase_ids=np.array(ids, np.int64),
                )
            )
        return out


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        random_image(40 + 8 * i, 30, seed=i).save(folder / f"img{i}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


PHRASES = ["cat", "dog", "tall tree=tree"]


def test_ground_runs_a_grounder_it_knows_only_by_its_protocol(folder: Path, tmp_path: Path):
    fake = BoxPerPhrase()
    config = GroundConfig(batch_size=2, num_workers=0, quiet=True)
    summary = ground([folder], PHRASES, out_dir=tmp_path / "out", model=fake, config=config)

    assert fake.encoded == [("cat", "dog", "tall tree")]  # phrases encoded once per run
    assert summary.images == 6 and summary.grounded == 5 and fake.predicted_images == 5
    assert [s["file"] for s in summary.skipped] == ["broken.jpg"]
    coco = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog", "tree"]
    assert coco["info"]["model"] == "fake-1"
    assert len(coco["annotations"]) == 15  # 5 images x 3 phrases
    assert [a["id"] for a in coco["annotations"]] == list(range(1, 16))
    sizes = {img["id"]: (img["width"], img["height"]) for img in coco["images"]}
    for ann in coco["annotations"]:
        width, height = sizes[ann["image_id"]]
        phrase_id = PHRASES.index(ann["phrase"]) if ann["phrase"] != "tall tree" else 2
        assert ann["category_id"] == phrase_id + 1
        assert ann["bbox"] == pytest.approx([0, 0, round(width / (phrase_id + 1), 2), height])
    crops_dir = tmp_path / "out" / "crops"
    crops = sorted(p.relative_to(crops_dir).as_posix() for p in crops_dir.rglob("*.jpg"))
    assert len(crops) == 15 and "tree/img0_3.jpg" in crops
    with Image.open(tmp_path / "out" / "crops" / "dog" / "img0_2.jpg") as crop:
        assert crop.size == (20, 30)  # the float box 0..20 of a 40-pixel-wide image
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    assert manifest["model"] == {
        "path": "fake:box-per-phrase",
        "config_hash": "none",
        "fingerprint": "fake-1",
    }
    assert manifest["arguments"]["fake"] is True and manifest["arguments"]["batch_size"] == 2


def test_a_resumed_run_grounds_only_what_is_left(folder: Path, tmp_path: Path):
    config = GroundConfig(batch_size=2, num_workers=0, quiet=True)
    first = BoxPerPhrase()
    ground([folder], PHRASES, out_dir=tmp_path / "whole", model=first, config=config)
    whole = (tmp_path / "whole" / "annotations.json").read_bytes()

    out = tmp_path / "resumed"
    ground(
        [folder / "img0.png", folder / "img1.png"], PHRASES, out_dir=out, model=BoxPerPhrase(), config=config
    )
    (out / "overlays" / "img1.png.jpg").unlink()  # as if the run had been killed before writing it
    second = BoxPerPhrase()
    summary = ground([folder], PHRASES, out_dir=out, model=second, config=config)
    assert summary.resumed == 2 and summary.repaired == 1 and second.predicted_images == 3
    assert (out / "overlays" / "img1.png.jpg").exists()
    annotations = json.loads((out / "annotations.json").read_text())["annotations"]
    assert [a["id"] for a in annotations] == list(range(1, 16))  # ids go on where the first run stopped
    # the same boxes as one uninterrupted run (image ids follow each run's listing, so compare those)
    assert [(a["bbox"], a["phrase"]) for a in annotations] == [
        (a["bbox"], a["phrase"]) for a in json.loads(whole)["annotations"]
    ]

    with pytest.raises(Exception, match="different model"):

        class Other(BoxPerPhrase):
            def identity(self):
                return {"model": "fake-2", "model_config": "none"}

        ground([folder], PHRASES, out_dir=out, model=Other(), config=config)


def test_evaluation_asks_each_image_for_its_own_phrases(folder: Path):
    def sample(name: str, phrase: str) -> GroundingSample:
        return GroundingSample(
            image_path=folder / name, phrase=phrase, boxes_xyxy=np.zeros((0, 4), np.float32), image_id=name
        )

    samples = [
        sample("img0.png", "dog"),
        sample("img1.png", "cat"),
        sample("img0.png", "cat"),
        sample("img0.png", "dog"),
    ]
    fake = BoxPerPhrase()
    results = predict_samples(fake, samples, batch_size=2, progress=False)
    assert fake.encoded == [("cat", "dog")]  # the batch's distinct phrases, once
    assert [len(scores) for _, scores in results] == [1, 1, 1, 1]
    (dog_box, _), (cat_box_1, _), (cat_box_0, _), (dog_again, _) = results
    assert dog_box[0, 2] == pytest.approx(40 / 2) and cat_box_0[0, 2] == pytest.approx(40)
    assert cat_box_1[0, 2] == pytest.approx(48)
    np.testing.assert_array_equal(dog_box, dog_again)


def test_postprocess_settings_reach_the_grounder(folder: Path, tmp_path: Path):
    config = GroundConfig(
        batch_size=3, num_workers=0, quiet=True, threshold=1.01, crops=False, overlays=False
    )
    summary = ground([folder], PHRASES, out_dir=tmp_path / "out", model=BoxPerPhrase(), config=config)
    assert summary.grounded == 5 and summary.annotations == 0
