from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import STORED_FROM_DISPLAYED
from vgtool.data.decode import ImageDecodeError, load_rgb


@pytest.mark.parametrize("orientation", sorted(STORED_FROM_DISPLAYED))
def test_all_exif_orientations_give_the_displayed_pixels(tmp_path, orientation):
    displayed = Image.fromarray(
        np.random.default_rng(orientation).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    )
    op = STORED_FROM_DISPLAYED[orientation]
    stored = displayed if op is None else displayed.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "p.png", exif=exif)
    loaded = load_rgb(tmp_path / "p.png")
    assert loaded.size == (50, 30)
    assert np.array_equal(np.asarray(loaded), np.asarray(displayed))


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"hello, not an image", "not an image"), (None, "corrupt or truncated")],
)
def test_unreadable_files_give_reasons(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content is None:
        Image.new("RGB", (64, 64), "red").save(path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason):
        load_rgb(path)


def test_modes_become_rgb(tmp_path):
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(tmp_path / "t.png")
    assert load_rgb(tmp_path / "t.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(tmp_path / "w.png")
    assert load_rgb(tmp_path / "w.png").getpixel((0, 0)) == (255, 255, 255)
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    r, g, b = load_rgb(tmp_path / "c.jpg").getpixel((0, 0))
    assert r > 200 and g < 60 and b < 60
