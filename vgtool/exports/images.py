"""Put an exported image beside its labels: a copy in the displayed orientation, a link, or nothing.

Boxes are in the displayed frame (EXIF orientation applied), but some readers (datumaro, hence
CVAT) decode pixels without applying the orientation. So a copied image whose EXIF orientation is
not 1 is re-encoded turned upright, its orientation tag dropped; any other image is copied byte
for byte. A link cannot be turned: :func:`place_image` reports its orientation so the caller can
warn.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from vgtool.errors import InputError
from vgtool.exports.options import ImagesMode

ORIENTATION_TAG = 0x0112
JPEG_QUALITY = 95
_SWAPS_SIDES = {5, 6, 7, 8}


@dataclass(frozen=True)
class SourceImage:
    """What the header of an image file says.

    Attributes:
        orientation: its EXIF orientation (1: stored as displayed).
        displayed_wh: its size once that orientation is applied.
    """

    orientation: int
    displayed_wh: tuple[int, int]


def read_header(path: Path) -> SourceImage:
    """The orientation and displayed size of ``path``, from its header only.

    Raises:
        InputError: the file is missing or not an image Pillow can open.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # corrupt EXIF: treated as orientation 1
            with Image.open(path) as image:
                orientation = int(image.getexif().get(ORIENTATION_TAG, 1) or 1)
                width, height = image.size
    except FileNotFoundError:
        raise InputError(f"{path}: image not found (pass --images with the folder the run read)") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError(f"{path}: cannot open image: {err}") from None
    if orientation in _SWAPS_SIDES:
        width, height = height, width
    return SourceImage(orientation=orientation, displayed_wh=(width, height))


def write_upright(source: Path, dest: Path) -> None:
    """Re-encode ``source`` to ``dest`` in its displayed orientation, in the same format, keeping
    its other EXIF tags and colour profile."""
    with Image.open(source) as image:
        image_format = image.format
        upright = ImageOps.exif_transpose(image)
        save_args: dict = {"format": image_format}
        exif = upright.getexif()
        exif.pop(ORIENTATION_TAG, None)
        if len(exif):
            save_args["exif"] = exif.tobytes()
        if image.info.get("icc_profile"):
            save_args["icc_profile"] = image.info["icc_profile"]
        if image_format == "JPEG":
            save_args["quality"] = JPEG_QUALITY
        upright.save(dest, **save_args)


def place_image(source: Path, dest: Path, mode: ImagesMode, header: SourceImage) -> None:
    """Copy or link ``source`` to ``dest`` (``mode`` ``none`` does nothing)."""
    if mode == "none":
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mode == "link":
        os.symlink(os.path.abspath(source), dest)
    elif header.orientation != 1:
        write_upright(source, dest)
    else:
        shutil.copyfile(source, dest)
