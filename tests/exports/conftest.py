"""A real grounding run over awkward file names, made by the real pipeline with a fake grounder.

The image folder holds sub-folders with the same file name, a name with spaces, ``a.png`` next to
``a.jpg``, a JPEG stored sideways with EXIF orientation 6, an all-black image (the fake grounder
finds nothing in it) and a broken file (skipped by the run).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import random_image
from vgtool.grounders.base import EncodedPhrases, no_measure
from vgtool.groundings import Groundings

PHRASES = ["red car=car", "blue car=car", "dog", "tall tree=tree"]
# file name -> (stored width, stored height, EXIF orientation)
IMAGES = {
    "a.jpg": (64, 48, 1),
    "a.png": (56, 40, 1),
    "sub1/a.jpg": (72, 40, 1),
    "sub2/a.jpg": (48, 64, 1),
    "with space/my photo.jpg": (60, 44, 1),
    "rot.jpg": (80, 50, 6),  # displayed 50 wide, 80 high
    "black.png": (40, 30, 1),
}
ROTATED = "rot.jpg"
EMPTY = "black.png"


def _mean_colour(image: Image.Image) -> torch.Tensor:
    """A picklable transform: each image becomes its mean colour, ``[3, 1, 1]`` uint8."""
    return torch.from_numpy(np.asarray(image).reshape(-1, 3).mean(0).astype(np.uint8)).view(3, 1, 1)


class VariedBoxes:
    """For phrase p, one box whose place depends on p and whose score depends on the image's mean
    red and on p (so scores vary within and across images); nothing in an all-black image."""

    family = "fake"
    source = "fake:varied-boxes"
    device = torch.device("cpu")
    default_threshold = 0.0
    image_transform = staticmethod(_mean_colour)

    def identity(self) -> dict[str, str]:
        return {"model": "fake-varied-1", "model_config": "none"}

    def settings(self) -> dict[str, object]:
        return {}

    def per_image_memory_bytes(self, num_phrases: int) -> int:
        return 1000 * (1 + num_phrases)

    def encode_phrases(self, phrases: Sequence[str], measure=no_measure) -> EncodedPhrases:
        return EncodedPhrases(texts=tuple(phrases), features=len(phrases))

    def predict(self, batch, phrases, *, postprocess, pairs=None, measure=no_measure):
        out = []
        for b in range(len(batch.indices)):
            width, height = batch.sizes_wh[b].tolist()
            red = float(batch.pixels[b, 0, 0, 0]) / 255
            ids = [] if red == 0 else list(range(phrases.features) if pairs is None else pairs[b])
            boxes = [
                [
                    width * (0.05 + 0.1 * p),
                    height * 0.13,
                    width * (0.53 + 0.1 * p),
                    height * (0.61 + 0.07 * p),
                ]
                for p in ids
            ]
            out.append(
                Groundings(
                    xyxy=np.array(boxes, np.float32).reshape(-1, 4),
                    scores=np.array([0.3 + (red * 7.3 + 0.17 * p) % 0.69 for p in ids], np.float32),
                    phrase_ids=np.array(ids, np.int64),
                )
            )
        return out


def make_image_folder(folder: Path) -> Path:
    for i, (name, (width, height, orientation)) in enumerate(sorted(IMAGES.items())):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = random_image(width, height, seed=i)
        if name == EMPTY:
            image = Image.new("RGB", (width, height))
        exif = Image.Exif()
        if orientation != 1:
            exif[0x0112] = orientation
        if path.suffix == ".jpg":
            image.save(path, exif=exif)
        else:
            image.save(path)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


@pytest.fixture(scope="session")
def grounded_run(tmp_path_factory) -> Path:
    """A finished run folder over :data:`IMAGES` (its ``image_root`` is the image folder)."""
    from vgtool.ground.pipeline import GroundConfig, ground

    root = tmp_path_factory.mktemp("exports")
    images = make_image_folder(root / "images")
    config = GroundConfig(
        batch_size=2, num_workers=0, quiet=True, recursive=True, crops=False, overlays=False
    )
    ground([images], PHRASES, out_dir=root / "run", model=VariedBoxes(), config=config)
    return root / "run"


def expected_boxes(run_dir: Path) -> dict[str, list[tuple[str, tuple[float, ...], float, str]]]:
    """From the run's annotations.json: file name -> ``(class, bbox_xywh, score, phrase)`` per box,
    in file order."""
    coco = json.loads((run_dir / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {image["id"]: image["file_name"] for image in coco["images"]}
    boxes: dict[str, list] = {name: [] for name in files.values()}
    for ann in coco["annotations"]:
        attributes = ann.get("attributes") or {}
        boxes[files[ann["image_id"]]].append(
            (
                names[ann["category_id"]],
                tuple(ann["bbox"]),
                attributes.get("score", ann.get("score")),
                attributes.get("phrase", ann.get("phrase")),
            )
        )
    return boxes
