"""The one record every dataset reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class GroundingSample:
    """One phrase in one image, with every box the phrase refers to.

    Attributes:
        image_path: the image file on disk.
        phrase: the referring expression, as written.
        boxes_xyxy: ``[N, 4]`` float32, pixels in the displayed (EXIF-applied) image frame. ``N`` may be
            0: the phrase names nothing in the image, and the right answer is no box.
        image_id: the dataset's id of the image (used to group samples and to match COCO results).
        width, height: displayed image size in pixels, when the dataset records it.
        category: a class name for the phrase's objects, when the dataset has one.
        sample_id: unique within a dataset split; ties results back to this record.
        meta: anything else a format carries (sentence ids, entity types, ``kind`` for synth data).
    """

    image_path: Path
    phrase: str
    boxes_xyxy: np.ndarray
    image_id: int | str
    width: int | None = None
    height: int | None = None
    category: str | None = None
    sample_id: int | str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        if not np.isfinite(boxes).all():
            raise ValueError(f"{self.image_path}: boxes must be finite numbers")
        if boxes.size and ((boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any()):
            raise ValueError(f"{self.image_path}: boxes must be x0,y0,x1,y1 with x1>=x0 and y1>=y0")
        object.__setattr__(self, "boxes_xyxy", boxes)
        object.__setattr__(self, "image_path", Path(self.image_path))
