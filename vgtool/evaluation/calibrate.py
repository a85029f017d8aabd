"""A model's default score threshold, chosen on validation data and stored in its checkpoint.

Score scales differ between models (the number of queries and the no-object weight shift them), so
one fixed threshold fits none of them well. ``vgtool export --calibrate DATA`` picks the lowest
threshold at which at most ``max_no_object_fp`` of the phrases that name nothing get a box, and
stores it under ``meta.postprocess.threshold``; ``vgtool ground`` and ``vgtool evaluate`` use it
when ``--threshold`` is not given (0.5 for a checkpoint without one).

The rate on a few hundred validation phrases is itself uncertain: a threshold that just meets 10%
there gives more on new data about half the time. So by default the bound that must stay under the
target is the one-sided 95% upper Clopper-Pearson bound of the rate, not the rate observed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vgtool.errors import InputError
from vgtool.models.build import MODEL_FAMILIES, model_family

GRID = np.round(np.arange(0.05, 1.0, 0.01), 2)  # thresholds considered, 0.05 .. 0.99


def upper_rate_bound(hits: int, total: int, confidence: float) -> float:
    """One-sided upper Clopper-Pearson bound of a rate seen as ``hits`` of ``total``; with
    ``confidence`` 0, the observed rate itself."""
    if confidence <= 0:
        return hits / total
    if hits >= total:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(confidence, hits + 1, total - hits))


def lowest_threshold(
    no_object_max_scores: Sequence[float], max_rate: float, confidence: float = 0.0
) -> float:
    """The lowest threshold of :data:`GRID` at which at most ``max_rate`` of the phrases get a box
    (with ``confidence`` > 0: at which the upper bound of that share is at most ``max_rate``).

    Args:
        no_object_max_scores: per phrase whose object is absent, the highest score of its boxes
            (0 when it has none).
        max_rate: the largest acceptable fraction of such phrases with a box.
        confidence: see :func:`upper_rate_bound`.
    """
    scores = np.asarray(no_object_max_scores, dtype=np.float64)
    if not len(scores):
        raise ValueError("no phrases without a box to calibrate on")
    for threshold in GRID:
        if upper_rate_bound(int((scores >= threshold).sum()), len(scores), confidence) <= max_rate:
            return float(threshold)
    return float(GRID[-1])


def calibrate(
    grounder,
    samples,
    *,
    max_no_object_fp: float = 0.1,
    confidence: float = 0.95,
    nms_iou: float = 0.7,
    quiet: bool = False,
) -> dict[str, Any]:
    """Choose the threshold for ``grounder`` on ``samples`` (a validation split with no-object
    phrases).

    Args:
        grounder: the loaded model (see :func:`vgtool.grounders.load_grounder`).
        confidence: see :func:`upper_rate_bound` (0: the rate seen on ``samples`` must meet the target).

    Returns:
        ``{"threshold", "max_no_object_fp", "confidence", "no_object_fp_rate", "no_object_fp_bound",
        "n_no_object", "nms_iou"}``, to be stored as ``meta.postprocess`` of the checkpoint.
    """
    from vgtool.evaluation.evaluate import EvalConfig, detection_indices
    from vgtool.evaluation.predict import predict_samples

    family = getattr(grounder, "family", "")
    if family in MODEL_FAMILIES and model_family(family).single_box:
        raise InputError(
            f"{grounder.source}: a {family} model answers every phrase with exactly one box and its "
            "score is a confidence, not a presence; a threshold for phrases that name nothing does not apply"
        )
    absent = [s for s in samples if len(s.boxes_xyxy) == 0]
    if not absent:
        raise ValueError("the calibration data has no phrases that name nothing")
    predictions = predict_samples(grounder, absent, progress=not quiet)
    config = EvalConfig(threshold=GRID[0], nms_iou=nms_iou)
    maxima = []
    for boxes, scores in predictions:
        kept = scores[detection_indices(boxes, scores, config)]
        maxima.append(float(kept.max()) if len(kept) else 0.0)
    threshold = lowest_threshold(maxima, max_no_object_fp, confidence)
    hits = int((np.asarray(maxima) >= threshold).sum())
    return {
        "threshold": threshold,
        "max_no_object_fp": max_no_object_fp,
        "confidence": confidence,
        "no_object_fp_rate": round(hits / len(maxima), 4),
        "no_object_fp_bound": round(upper_rate_bound(hits, len(maxima), confidence), 4),
        "n_no_object": len(absent),
        "nms_iou": nms_iou,
    }
