"""Evaluate grounding on a dataset: a model or any tool's COCO predictions -> metrics.json and plots.

Outputs in ``out_dir``: ``metrics.json`` (overall and per phrase kind), ``iou_histogram.png``,
``examples_best_worst.png`` and, for a model, ``predictions.json`` (a COCO results list with phrases,
which :func:`evaluate_predictions` scores to the same numbers).

What is scored, per sample (one phrase in one image):

- top-1 metrics (``acc@0.5``, ``acc@0.75``, ``miou``): the highest-scoring predicted box, whatever its
  score, against the phrase's ground-truth boxes; only phrases with at least one box count.
- detections: the boxes left by NMS at ``nms_iou``. ``map``, ``map50``, ``map75`` are COCO mAP over
  those scoring at least ``map_min_score``, each sample its own image; ``no_object_fp_rate`` is the
  fraction of phrases without a ground-truth box that get one scoring at least ``threshold`` (and
  ``no_object_mean_false_boxes`` the mean number of such boxes).
- ``crop_similarity`` (with ``EvalConfig.crop_similarity``): the mean cosine similarity of the
  top-1 predicted crop and the true crop in a CLIP-family model's image embedding space, over the
  phrases with exactly one box (``n_crop_similarity``); see :mod:`vgtool.evaluation.crop_similarity`.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vgtool.atomic import write_bytes_atomic
from vgtool.box_ops import nms
from vgtool.checkpoint import FALLBACK_THRESHOLD
from vgtool.datasets import DataConfig, GroundingSample, load_samples
from vgtool.errors import InputError
from vgtool.evaluation.crop_similarity import CropEmbedder, crop_similarities, mean_similarity
from vgtool.evaluation.metrics import (
    coco_map,
    grounding_accuracy,
    iou_histogram,
    no_object_false_positive_rate,
    top1_ious,
)
from vgtool.evaluation.plots import HISTOGRAM_BINS, plot_best_worst, plot_iou_histogram
from vgtool.evaluation.prediction_file import Prediction, load_prediction_file
from vgtool.writers.coco import detections_to_coco_annotations


@dataclass(frozen=True)
class EvalConfig:
    """Settings of an evaluation.

    Attributes:
        threshold: a detection scoring at least this counts as a box for a no-object phrase; None
            uses the model's calibrated default (0.5 for predictions files and uncalibrated models).
        map_min_score: detections for mAP (and the no-object rate) score at least this.
        nms_iou: NMS IoU for detections; 1.0 disables NMS.
        batch_size: images per model call.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        bf16: bf16 autocast; None means on for CUDA, off for CPU.
        num_workers: processes decoding images.
        plots: draw ``iou_histogram.png`` and ``examples_best_worst.png``.
        quiet: no progress bar.
        crop_similarity: a CLIP-family model (``hf:<hub id>`` or a ``save_pretrained`` folder) to
            score crop similarity with; None skips that metric.
    """

    threshold: float | None = None
    map_min_score: float = 0.05
    nms_iou: float = 0.7
    batch_size: int = 16
    device: str = "auto"
    bf16: bool | None = None
    num_workers: int = 0
    plots: bool = True
    quiet: bool = False
    crop_similarity: str | None = None


def sample_kind(sample: GroundingSample) -> str:
    """``meta["kind"]`` when the dataset has it, else ``none``/``single``/``multi`` by box count."""
    if sample.meta.get("kind"):
        return str(sample.meta["kind"])
    count = len(sample.boxes_xyxy)
    return "none" if count == 0 else "single" if count == 1 else "multi"


def detection_indices(boxes_xyxy: np.ndarray, scores: np.ndarray, config: EvalConfig) -> np.ndarray:
    """Indices of the detections, by decreasing score: boxes scoring at least ``map_min_score`` or
    ``threshold`` (the lower), after NMS at ``nms_iou``.

    Greedy NMS never lets a box suppress a better one, so the detections above any higher score are
    what NMS over those alone would keep.
    """
    keep = np.flatnonzero(scores >= min(config.map_min_score, config.threshold))
    if config.nms_iou >= 1.0 or len(keep) == 0:
        return keep[np.argsort(-scores[keep], kind="stable")]
    order = nms(
        torch.from_numpy(boxes_xyxy[keep]).float(), torch.from_numpy(scores[keep]).float(), config.nms_iou
    )
    return keep[order.numpy()]


def _finite(value: float) -> float | None:
    """JSON-safe metric: NaN (nothing to measure) becomes null; 6 decimals."""
    return None if math.isnan(value) else round(float(value), 6)


def _group_metrics(
    samples: Sequence[GroundingSample],
    predictions: Sequence[Prediction],
    detections: Sequence[Prediction],
    ious: np.ndarray,
    indices: list[int],
    config: EvalConfig,
    crop_similarities: np.ndarray | None = None,
) -> dict[str, Any]:
    with_boxes = [i for i in indices if len(samples[i].boxes_xyxy)]
    no_object = [i for i in indices if not len(samples[i].boxes_xyxy)]
    accuracy = grounding_accuracy(ious[indices], thresholds=(0.5, 0.75))
    false_positives = no_object_false_positive_rate([detections[i][1] for i in no_object], config.threshold)
    maps = {"map": math.nan, "map50": math.nan, "map75": math.nan}
    if with_boxes:
        scored = []
        for i in indices:
            boxes_xyxy, scores = detections[i]
            keep = scores >= config.map_min_score
            if keep.any():
                scored.append((i, 0, boxes_xyxy[keep], scores[keep]))
        maps = coco_map([(i, 0, samples[i].boxes_xyxy) for i in indices], scored)
    table = {
        "acc@0.5": _finite(accuracy["acc@0.5"]),
        "acc@0.75": _finite(accuracy["acc@0.75"]),
        "miou": _finite(accuracy["miou"]),
        **{key: _finite(value) for key, value in maps.items()},
        "no_object_fp_rate": _finite(false_positives["fp_rate"]),
        "no_object_mean_false_boxes": _finite(false_positives["mean_false_boxes"]),
        "n_samples": len(indices),
        "n_with_boxes": len(with_boxes),
        "n_no_object": len(no_object),
        "n_without_prediction": sum(len(predictions[i][1]) == 0 for i in indices),
    }
    if crop_similarities is not None:
        mean, count = mean_similarity(crop_similarities[indices])
        table.update(crop_similarity=_finite(mean), n_crop_similarity=count)
    return table


def score_predictions(
    samples: Sequence[GroundingSample],
    predictions: Sequence[Prediction],
    *,
    config: EvalConfig,
    crop_similarities: np.ndarray | None = None,
) -> dict[str, Any]:
    """All metrics of ``predictions`` (one per sample, in order) against ``samples``.

    ``crop_similarities`` (per sample, NaN where not scored; see
    :func:`~vgtool.evaluation.crop_similarity.crop_similarities`) adds ``crop_similarity`` and
    ``n_crop_similarity`` to every table.

    Returns:
        ``overall`` and ``by_kind`` metric tables (rates are null where nothing is measured),
        ``by_form`` tables keyed ``kind/form`` for the samples whose dataset names their phrase's form
        (``meta["form"]``, e.g. ``single/relation`` for ``vgtool synth`` data; empty otherwise), the
        top-1 ``iou_histogram`` (``counts``, ``edges``) and the scoring ``settings``.
    """
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions")
    if config.threshold is None:
        config = replace(config, threshold=FALLBACK_THRESHOLD)
    ious = top1_ious(
        [p[0] for p in predictions], [p[1] for p in predictions], [s.boxes_xyxy for s in samples]
    )
    detections = []
    for boxes_xyxy, scores in predictions:
        keep = detection_indices(boxes_xyxy, scores, config)
        detections.append((boxes_xyxy[keep], scores[keep]))
    kinds: dict[str, list[int]] = defaultdict(list)
    forms: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        kinds[sample_kind(sample)].append(i)
        if sample.meta.get("form"):
            forms[f"{sample_kind(sample)}/{sample.meta['form']}"].append(i)
    counts, edges = iou_histogram(ious, bins=HISTOGRAM_BINS)
    return {
        "overall": _group_metrics(
            samples, predictions, detections, ious, list(range(len(samples))), config, crop_similarities
        ),
        "by_kind": {
            kind: _group_metrics(
                samples, predictions, detections, ious, kinds[kind], config, crop_similarities
            )
            for kind in sorted(kinds)
        },
        "by_form": {
            group: _group_metrics(
                samples, predictions, detections, ious, forms[group], config, crop_similarities
            )
            for group in sorted(forms)
        },
        "iou_histogram": {"counts": counts.tolist(), "edges": [round(float(e), 6) for e in edges]},
        "settings": {
            "threshold": config.threshold,
            "map_min_score": config.map_min_score,
            "nms_iou": config.nms_iou,
        },
    }


def _write_json(path: Path, document: Any) -> None:
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    write_bytes_atomic(path, (text + "\n").encode("utf-8"))


def predictions_to_coco_results(
    samples: Sequence[GroundingSample], predictions: Sequence[Prediction], *, config: EvalConfig
) -> list[dict[str, Any]]:
    """A COCO results list with phrases: each sample's detections (see :func:`detection_indices`),
    and always its top-1 box.

    ``category_id`` numbers the distinct phrases in sorted order from 1. A repeated (image, phrase)
    pair is written once. Scored by :func:`evaluate_predictions`, the list gives the same metrics.
    """
    category_ids = {phrase: i for i, phrase in enumerate(sorted({s.phrase for s in samples}), start=1)}
    seen: set[tuple[str, str]] = set()
    records: list[dict[str, Any]] = []
    for sample, (boxes_xyxy, scores) in zip(samples, predictions, strict=True):
        key = (str(sample.image_id), sample.phrase)
        if key in seen or not len(scores):
            continue
        seen.add(key)
        keep = detection_indices(boxes_xyxy, scores, config)
        if not len(keep):
            keep = np.array([int(np.argmax(scores))])
        for record in detections_to_coco_annotations(
            boxes_xyxy[keep],
            scores[keep],
            image_id=sample.image_id,
            category_id=category_ids[sample.phrase],
            phrase=sample.phrase,
            first_id=len(records) + 1,
        ):
            records.append({k: record[k] for k in ("image_id", "category_id", "bbox", "score", "phrase")})
    return records


# ---- reading predictions files ------------------------------------------------------------------


def _write_report(
    out_dir: Path,
    samples: Sequence[GroundingSample],
    predictions: Sequence[Prediction],
    metrics: dict,
    plots: bool,
) -> None:
    _write_json(out_dir / "metrics.json", metrics)
    if not plots:
        return
    ious = top1_ious(
        [p[0] for p in predictions], [p[1] for p in predictions], [s.boxes_xyxy for s in samples]
    )
    plot_iou_histogram(out_dir / "iou_histogram.png", ious)
    plot_best_worst(out_dir / "examples_best_worst.png", samples, predictions, ious)


def _load_crop_embedder(config: EvalConfig) -> CropEmbedder | None:
    """The crop-similarity model, loaded before any other work so a model not at hand fails fast."""
    if config.crop_similarity is None:
        return None
    return CropEmbedder.load(config.crop_similarity, device=config.device)


def _score(
    samples: Sequence[GroundingSample],
    predictions: Sequence[Prediction],
    config: EvalConfig,
    embedder: CropEmbedder | None,
) -> dict[str, Any]:
    """:func:`score_predictions`, with crop similarity when there is an ``embedder``."""
    if embedder is None:
        return score_predictions(samples, predictions, config=config)
    similarities = crop_similarities(
        samples, predictions, embedder, batch_size=config.batch_size, progress=not config.quiet
    )
    metrics = score_predictions(samples, predictions, config=config, crop_similarities=similarities)
    metrics["settings"]["crop_similarity_model"] = embedder.identity()
    return metrics


def _load_samples(data: DataConfig) -> list[GroundingSample]:
    samples = load_samples(data)
    if not samples:
        raise InputError(
            f"{data.path}: no samples to evaluate" + (f" in split {data.split!r}" if data.split else "")
        )
    return samples


def evaluate_model(
    *,
    model: str | Path | None,
    data: DataConfig,
    out_dir: str | Path,
    config: EvalConfig | None = None,
) -> dict[str, Any]:
    """Run a checkpoint over a dataset, score it and write the outputs (see the module docstring).

    Args:
        model: checkpoint folder; None (or ``default``) uses the bundled model.
        data: the dataset.
        out_dir: created if needed; earlier outputs there are replaced.
        config: evaluation settings.

    Returns:
        The metrics, as written to ``metrics.json``.

    Raises:
        CheckpointError, InputError, ConfigError: a bad model, dataset or image.
    """
    from vgtool.evaluation.predict import predict_samples
    from vgtool.grounders import load_grounder

    config = config or EvalConfig()
    embedder = _load_crop_embedder(config)
    samples = _load_samples(data)
    grounder = load_grounder(model, device=config.device, bf16=config.bf16)
    if config.threshold is None:
        config = replace(config, threshold=grounder.default_threshold)
    predictions = predict_samples(
        grounder,
        samples,
        batch_size=config.batch_size,
        progress=not config.quiet,
        num_workers=config.num_workers,
    )
    metrics = _score(samples, predictions, config, embedder)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(
        out_dir / "predictions.json", predictions_to_coco_results(samples, predictions, config=config)
    )
    _write_report(out_dir, samples, predictions, metrics, config.plots)
    return metrics


def evaluate_predictions(
    *,
    predictions: str | Path,
    data: DataConfig,
    out_dir: str | Path,
    config: EvalConfig | None = None,
) -> dict[str, Any]:
    """Score a COCO predictions file from any tool against a dataset and write the outputs.

    The file is a COCO results list (``[{"image_id", "bbox" xywh, "score", "phrase"?, "category_id"}]``)
    or a COCO dict with ``images`` and ``annotations`` (such as vgtool's ``annotations.json``).
    Each predicted box goes to the samples with the same (image, phrase):

    - image: with an ``images`` table, by ``file_name``: the dataset image whose path ends with it
      (``val/a.jpg`` matches ``.../images/val/a.jpg``), else the one whose base name equals its
      base name; an ambiguous name matches nothing. Without one, by ``image_id`` (compared as text).
    - phrase: in a file with a top-level ``phrases`` list, each phrase listing the box's annotation
      id; else the box's ``phrase``; else the name of its ``category_id`` in the file's
      ``categories`` (or the dataset's, for a COCO dataset). Phrases compare exactly, outer
      whitespace ignored.
    - score: ``score``, 1.0 when absent (ground truth given as predictions).

    Samples that no box matches count as "no prediction" (top-1 IoU 0, no false positive);
    ``metrics["matching"]`` counts those with ground-truth boxes, and the boxes that matched no sample.

    Args:
        predictions: the predictions file.
        data: the dataset.
        out_dir: created if needed.
        config: evaluation settings (``bf16`` is unused; ``batch_size`` and ``device`` serve only
            crop similarity).

    Returns:
        The metrics, as written to ``metrics.json``.
    """
    config = config or EvalConfig()
    if config.threshold is None:
        config = replace(config, threshold=FALLBACK_THRESHOLD)
    embedder = _load_crop_embedder(config)
    samples = _load_samples(data)
    per_sample, counts = load_prediction_file(Path(predictions), samples, data)
    metrics = _score(samples, per_sample, config, embedder)
    metrics["matching"] = counts
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_report(out_dir, samples, per_sample, metrics, config.plots)
    return metrics
