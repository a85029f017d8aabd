"""One box per object when several phrases find it.

Two phrases filed under one class (``-p "all triangles=triangle" -p "the rightmost shape=triangle"``)
each put a box on the same triangle; both would go into the labels. After each phrase's own
selection (threshold, NMS, top-k), boxes of *different* phrases in one group that overlap by more
than an IoU are merged: the best-scoring box stays, the others go (greedy, by decreasing score, as
NMS does). Boxes of one phrase are never merged here; that is the phrase's own NMS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from vgtool import box_ops
from vgtool.groundings import Groundings

MergeMode = Literal["class", "all", "none"]


@dataclass(frozen=True)
class MergeConfig:
    """How boxes of several phrases on one object are merged.

    Attributes:
        mode: ``class`` merges across phrases of one class, ``all`` across every phrase (class
            agnostic: the best-scoring phrase's class wins), ``none`` keeps every box.
        iou: boxes overlapping by more than this are one object.
    """

    mode: MergeMode = "class"
    iou: float = 0.5


def phrase_groups(mode: MergeMode, phrase_categories: Sequence[str]) -> list[int] | None:
    """Each phrase's merge group, by phrase id; None when no two phrases share a group (nothing
    to merge)."""
    if mode == "none":
        return None
    if mode == "all":
        return [0] * len(phrase_categories) if len(phrase_categories) > 1 else None
    index = {name: i for i, name in enumerate(dict.fromkeys(phrase_categories))}
    groups = [index[name] for name in phrase_categories]
    return groups if len(set(groups)) < len(groups) else None


def merge_phrases(groundings: Groundings, groups: Sequence[int], iou: float) -> Groundings:
    """Drop each box that a better-scoring box of another phrase in its group overlaps by more
    than ``iou``; the kept boxes stay in their order.

    Args:
        groundings: one image's boxes (xyxy pixels) with their phrase ids.
        groups: the merge group of each phrase id.
    """
    if len(groundings) < 2:
        return groundings
    group = np.asarray(groups, dtype=np.int64)[groundings.phrase_ids]  # [N]
    boxes_xyxy = torch.from_numpy(np.ascontiguousarray(groundings.xyxy, dtype=np.float32))
    conflict = box_ops.box_iou(boxes_xyxy, boxes_xyxy).numpy() > iou  # [N, N]
    conflict &= group[:, None] == group[None, :]
    conflict &= groundings.phrase_ids[:, None] != groundings.phrase_ids[None, :]
    if not conflict.any():
        return groundings
    order = np.argsort(-groundings.scores, kind="stable")
    keep = np.ones(len(groundings), dtype=bool)
    for i in order:
        if keep[i]:
            keep &= ~conflict[i]
            keep[i] = True
    return groundings[keep]
