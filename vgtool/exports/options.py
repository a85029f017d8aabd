"""What shapes an export: one set of options, the same names for every format.

Options a format has no use for are ignored by it (``url_prefix`` outside Label Studio,
``confidence`` outside YOLO, ``val_fraction`` where the format has no subsets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from vgtool.errors import InputError

ImagesMode = Literal["copy", "link", "none"]
IMAGES_MODES: tuple[str, ...] = get_args(ImagesMode)
LOCAL_FILES_PREFIX = "/data/local-files/?d="


@dataclass(frozen=True)
class ExportOptions:
    """Settings of an export (recorded in its ``export.json``).

    Attributes:
        min_score: keep boxes scoring at least this.
        classes: keep only boxes of these classes (category names); empty keeps all.
        keep_empty: keep images left without boxes (negatives); False drops them.
        images_mode: ``copy`` the images beside the labels (an image with an EXIF orientation
            is written in its displayed orientation, the frame the boxes are in), ``link`` them
            (symlinks to the originals) or ``none`` (labels only).
        val_fraction: share of the exported images put in subset ``val`` (the rest in ``train``);
            for the formats with subsets (yolo, voc, coco, odvg).
        seed: seeds the train/val draw; the same run, options and seed give the same split.
        confidence: YOLO: a sixth column with the score (ultralytics ``save_conf``; training
            readers want five columns).
        url_prefix: Label Studio: prepended to the URL-quoted ``file_name`` to make ``data.image``.
    """

    min_score: float = 0.0
    classes: tuple[str, ...] = ()
    keep_empty: bool = True
    images_mode: ImagesMode = "copy"
    val_fraction: float = 0.0
    seed: int = 0
    confidence: bool = False
    url_prefix: str = LOCAL_FILES_PREFIX

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_score <= 1.0:
            raise InputError(f"--min-score: {self.min_score} is not between 0 and 1")
        if self.images_mode not in IMAGES_MODES:
            raise InputError(f"--images-mode: {self.images_mode!r} is not one of {', '.join(IMAGES_MODES)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"--val-fraction: {self.val_fraction} is not in [0, 1)")
