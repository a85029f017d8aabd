"""Grounding metrics: pure functions from predicted and ground-truth boxes to numbers.

All boxes here are ``xyxy`` in pixels of the displayed image. Arrays may be numpy arrays or CPU torch
tensors. A phrase's ground truth may hold no box (the phrase names nothing in the image).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Hashable, Sequence

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vgtool.box_ops import box_iou, xyxy_to_xywh

ArrayLike = np.ndarray | torch.Tensor


def _numpy(values: ArrayLike | Sequence[float], dtype: type = np.float64) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def _boxes(boxes_xyxy: ArrayLike) -> torch.Tensor:
    return torch.from_numpy(_numpy(boxes_xyxy).reshape(-1, 4))


def top1_ious(
    pred_boxes_xyxy: Sequence[ArrayLike], pred_scores: Sequence[ArrayLike], gt_boxes_xyxy: Sequence[ArrayLike]
) -> np.ndarray:
    """IoU of each phrase's highest-scoring predicted box with its best-matching ground-truth box.

    Args:
        pred_boxes_xyxy: per phrase, ``[Q_i, 4]`` predicted boxes.
        pred_scores: per phrase, ``[Q_i]`` scores; ties go to the first box.
        gt_boxes_xyxy: per phrase, ``[n_i, 4]`` ground-truth boxes.

    Returns:
        ``[P]`` float64, one value per input phrase in input order: the max IoU over the phrase's
        ground-truth boxes (0 when there is no prediction), and NaN for phrases with no ground-truth box.
        :func:`grounding_accuracy` and :func:`iou_histogram` skip the NaNs.
    """
    if not len(pred_boxes_xyxy) == len(pred_scores) == len(gt_boxes_xyxy):
        raise ValueError(
            f"got {len(pred_boxes_xyxy)} box sets, {len(pred_scores)} score sets and "
            f"{len(gt_boxes_xyxy)} ground-truth sets; they must match one to one"
        )
    ious = np.full(len(gt_boxes_xyxy), np.nan)
    for i, (boxes, scores, gt) in enumerate(zip(pred_boxes_xyxy, pred_scores, gt_boxes_xyxy, strict=True)):
        boxes, scores, gt = _boxes(boxes), _numpy(scores).reshape(-1), _boxes(gt)
        if len(boxes) != len(scores):
            raise ValueError(f"phrase {i}: {len(boxes)} boxes but {len(scores)} scores")
        if len(gt) == 0:
            continue
        ious[i] = 0.0 if len(boxes) == 0 else box_iou(boxes[[int(scores.argmax())]], gt).max().item()
    return ious


def grounding_accuracy(ious: ArrayLike, thresholds: Sequence[float] = (0.5, 0.75)) -> dict[str, float]:
    """Fraction of phrases whose top-1 IoU reaches each threshold.

    Args:
        ious: ``[P]`` top-1 IoUs (:func:`top1_ious`); NaNs (phrases without ground truth) are skipped.
        thresholds: a phrase counts as correct at ``t`` when its IoU is ``>= t``.

    Returns:
        ``acc@<t>`` for each threshold (``acc@0.5``), ``miou`` (mean IoU) and ``n`` (phrases counted).
        The rates are NaN when ``n`` is 0.
    """
    values = _numpy(ious).reshape(-1)
    values = values[~np.isnan(values)]
    n = len(values)
    result = {f"acc@{t:g}": float((values >= t).mean()) if n else float("nan") for t in thresholds}
    result["miou"] = float(values.mean()) if n else float("nan")
    result["n"] = n
    return result


def no_object_false_positive_rate(
    pred_scores_per_phrase: Sequence[ArrayLike], threshold: float
) -> dict[str, float]:
    """How often boxes are predicted for phrases whose object is absent from the image.

    Args:
        pred_scores_per_phrase: per phrase with no ground-truth box, ``[Q_i]`` scores of its predictions.
        threshold: a box counts as predicted when its score is ``>= threshold``.

    Returns:
        ``fp_rate`` (fraction of phrases with at least one such box), ``mean_false_boxes`` (mean number
        of such boxes per phrase) and ``n`` (phrases). The rates are NaN when ``n`` is 0.
    """
    counts = np.array([int((_numpy(s).reshape(-1) >= threshold).sum()) for s in pred_scores_per_phrase])
    n = len(counts)
    return {
        "fp_rate": float((counts > 0).mean()) if n else float("nan"),
        "mean_false_boxes": float(counts.mean()) if n else float("nan"),
        "n": n,
    }


def coco_map(
    gt: Sequence[tuple[Hashable, Hashable, ArrayLike]],
    predictions: Sequence[tuple[Hashable, Hashable, ArrayLike, ArrayLike]],
) -> dict[str, float]:
    """COCO box mAP with each (image, phrase) pair evaluated as its own image.

    Every pair in ``gt`` becomes one COCO image (ids from 1 in input order) with one category, so boxes
    of one phrase never match another phrase's ground truth. Pairs without ground-truth boxes stay in:
    boxes predicted for them are false positives. COCO's rules apply: at most 100 boxes per pair (the
    highest-scoring) are evaluated.

    Args:
        gt: ``(image_key, phrase_key, boxes_xyxy [n, 4])`` per pair; keys must be unique pairs.
        predictions: ``(image_key, phrase_key, boxes_xyxy [m, 4], scores [m])``; every key pair must be
            in ``gt``; pairs with no predictions may be left out.

    Returns:
        ``map`` (AP averaged over IoU 0.50:0.95), ``map50`` and ``map75``. Each is -1.0, as COCOeval
        reports it, when ``gt`` holds no box at all; never NaN.
    """
    image_ids: dict[tuple[Hashable, Hashable], int] = {}
    annotations = []
    for image_key, phrase_key, boxes_xyxy in gt:
        if (image_key, phrase_key) in image_ids:
            raise ValueError(f"duplicate ground truth for image {image_key!r}, phrase {phrase_key!r}")
        image_id = image_ids[image_key, phrase_key] = len(image_ids) + 1
        for x, y, w, h in xyxy_to_xywh(_boxes(boxes_xyxy)).tolist():
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    if not annotations:
        return {"map": -1.0, "map50": -1.0, "map75": -1.0}

    detections = []
    for image_key, phrase_key, boxes_xyxy, scores in predictions:
        if (image_key, phrase_key) not in image_ids:
            raise ValueError(f"prediction for image {image_key!r}, phrase {phrase_key!r} has no ground truth")
        boxes_xywh, scores = xyxy_to_xywh(_boxes(boxes_xyxy)).tolist(), _numpy(scores).reshape(-1).tolist()
        if len(boxes_xywh) != len(scores):
            raise ValueError(
                f"image {image_key!r}, phrase {phrase_key!r}: {len(boxes_xywh)} boxes, {len(scores)} scores"
            )
        detections += [
            {"image_id": image_ids[image_key, phrase_key], "category_id": 1, "bbox": box, "score": score}
            for box, score in zip(boxes_xywh, scores, strict=True)
        ]
    if not detections:  # COCO.loadRes cannot take an empty list; no detection means AP 0
        return {"map": 0.0, "map50": 0.0, "map75": 0.0}

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": [{"id": i} for i in image_ids.values()],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "object"}],
        }
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(detections), iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = coco_eval.stats
    return {"map": float(stats[0]), "map50": float(stats[1]), "map75": float(stats[2])}


def iou_histogram(ious: ArrayLike, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of IoUs over [0, 1], skipping NaNs.

    Returns:
        ``counts`` ``[bins]`` int64 and ``edges`` ``[bins + 1]``; an IoU of exactly 1 falls in the last bin.
    """
    values = _numpy(ious).reshape(-1)
    counts, edges = np.histogram(values[~np.isnan(values)], bins=bins, range=(0.0, 1.0))
    return counts.astype(np.int64), edges
