from __future__ import annotations

from pathlib import Path

import pytest

from vgtool.errors import InputError
from vgtool.writers.crops import crop_box_xyxy, crop_path
from vgtool.writers.paths import inside, safe_component


@pytest.mark.parametrize(
    "text", ["../../x", "a/b\\c", "nul\x00byte", "x" * 300, ".hidden", "..", "", "  ", "ünïcode name"]
)
def test_safe_component_never_escapes(tmp_path, text):
    name = safe_component(text)
    assert name and "/" not in name and "\\" not in name and "\x00" not in name
    assert name not in {".", ".."} and not name.startswith(".")
    assert len(name.encode()) <= 90
    path = crop_path(tmp_path, text, f"{text}.jpg", 7)
    assert path.resolve().is_relative_to(tmp_path.resolve())


def test_different_texts_stay_different():
    assert safe_component("a/b") != safe_component("a\\b")
    assert safe_component("x" * 300) != safe_component("x" * 301)
    assert safe_component("red car") == "red_car_" + safe_component("red car").rsplit("_", 1)[1]


def test_inside_refuses_escapes(tmp_path):
    assert inside(tmp_path, "a/b.jpg") == tmp_path / "a" / "b.jpg"
    for bad in ("../x.jpg", "/etc/passwd", "a/../../x"):
        with pytest.raises(InputError):
            inside(tmp_path, Path(bad))


@pytest.mark.parametrize(
    ("box_xyxy", "size", "window"),
    [
        ([10.4, 5.6, 30.6, 15.4], (100, 50), (10, 6, 31, 15)),  # edges to the nearest boundary
        ([10.0, 5.0, 30.0, 15.0], (100, 50), (10, 5, 30, 15)),  # whole pixels stay as they are
        ([-5, -5, -3, -3], (10, 10), (0, 0, 1, 1)),  # outside: one pixel at the border
        ([9.9, 9.9, 9.91, 9.91], (10, 10), (9, 9, 10, 10)),  # under a pixel: still one
        ([80.2, 40.5, 120.0, 60.0], (100, 50), (80, 40, 100, 50)),  # clipped to the image
    ],
)
def test_crop_window(box_xyxy, size, window):
    assert crop_box_xyxy(box_xyxy, *size) == window


@pytest.mark.parametrize(
    ("file_name", "overlay"),
    [
        ("a/photo.jpg", "a/photo.jpg"),
        ("a/photo.png", "a/photo.png.jpg"),
        ("IMG.JPG", "IMG.JPG"),
        ("x.tiff", "x.tiff.jpg"),
    ],
)
def test_overlay_names_never_collide(tmp_path, file_name, overlay):
    from vgtool.writers.overlays import overlay_path

    assert overlay_path(tmp_path, file_name) == tmp_path / "overlays" / overlay
