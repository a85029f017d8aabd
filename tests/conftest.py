"""Shared fixtures: a tiny random checkpoint (built once, offline) and image makers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A ``vlgtr-tiny`` checkpoint with random weights; builds in about a second."""
    from vgtool.checkpoint import init_checkpoint

    return init_checkpoint("vlgtr-tiny", tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


# EXIF orientation -> the Pillow transpose that turns the displayed image into the stored one
STORED_FROM_DISPLAYED = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Five small JPEG/PNG images, one in a sub-folder."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i in range(4):
        random_image(96 + 8 * i, 72, seed=i).save(folder / f"img{i}.jpg", quality=95)
    random_image(64, 80, seed=9).save(folder / "sub" / "deep.png")
    return folder
