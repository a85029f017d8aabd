"""``Groundings``: what a grounder found in one image, the currency from postprocessing to writers.

As supervision's ``Detections``: numpy fields checked once in ``__post_init__``, and boolean-mask
or index slicing that keeps them together. Boxes are float pixels of the displayed image (EXIF
orientation applied), ``xyxy``; rounding happens only when a writer formats them (COCO ``bbox``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Groundings:
    """The boxes found for some phrases in one image.

    Attributes:
        xyxy: ``[N, 4]`` float32, ``(x0, y0, x1, y1)`` pixels of the displayed image.
        scores: ``[N]`` float32 confidence of each box for its phrase.
        phrase_ids: ``[N]`` int64 index of each box's phrase in the run's phrase list.
        data: anything else a grounder reports per box, each value an array of length ``N``.

    Writers take the boxes in the order given here; grounders order them by phrase, then by
    decreasing score.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    phrase_ids: np.ndarray
    data: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.xyxy, "xyxy", np.float32, 2)
        _check(self.scores, "scores", np.float32, 1)
        _check(self.phrase_ids, "phrase_ids", np.int64, 1)
        n = len(self.xyxy)
        if self.xyxy.shape[1:] != (4,):
            raise ValueError(f"xyxy must be [N, 4], got {list(self.xyxy.shape)}")
        for name, value in (("scores", self.scores), ("phrase_ids", self.phrase_ids), *self.data.items()):
            if len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} boxes")

    @classmethod
    def empty(cls) -> Groundings:
        """No boxes."""
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            scores=np.zeros(0, np.float32),
            phrase_ids=np.zeros(0, np.int64),
        )

    @classmethod
    def merge(cls, parts: list[Groundings]) -> Groundings:
        """The boxes of ``parts`` one after the other (``data`` keys must agree)."""
        if not parts:
            return cls.empty()
        keys = set(parts[0].data)
        if any(set(p.data) != keys for p in parts):
            raise ValueError("cannot merge groundings with different data keys")
        return cls(
            xyxy=np.concatenate([p.xyxy for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            phrase_ids=np.concatenate([p.phrase_ids for p in parts]),
            data={k: np.concatenate([p.data[k] for p in parts]) for k in keys},
        )

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[int, int, Any, Any]], num_images: int) -> list[Groundings]:
        """``(image, phrase, boxes_xyxy [n, 4], scores [n])`` per (image, phrase) pair -> one
        :class:`Groundings` per image, boxes by phrase id, then in the order given (decreasing
        score, as postprocessing sorts them). Boxes and scores may be numpy arrays or CPU tensors."""
        parts: list[list[tuple[int, Groundings]]] = [[] for _ in range(num_images)]
        for image, phrase, boxes_xyxy, scores in pairs:
            scores = np.asarray(scores, np.float32)
            boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
            parts[image].append((phrase, cls(boxes, scores, np.full(len(scores), phrase, np.int64))))
        # sorted by phrase only (stable), so each phrase keeps its own order
        return [cls.merge([g for _, g in sorted(found, key=lambda part: part[0])]) for found in parts]

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> Groundings:
        """A boolean mask, an integer array, a slice or an int -> the selected boxes."""
        if isinstance(index, int | np.integer):
            index = [int(index)]
        return Groundings(
            xyxy=self.xyxy[index],
            scores=self.scores[index],
            phrase_ids=self.phrase_ids[index],
            data={k: v[index] for k, v in self.data.items()},
        )


def _check(value: Any, name: str, dtype: type, ndim: int) -> None:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
    if value.dtype != dtype or value.ndim != ndim:
        raise ValueError(
            f"{name} must be {ndim}-d {np.dtype(dtype).name}, got {value.ndim}-d {value.dtype.name}"
        )
