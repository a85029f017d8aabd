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
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from vgtool.atomic import write_bytes_atomic
from vgtool.box_ops import nms
from vgtool.datasets import DataConfig, GroundingSample, detect_format, load_samples
from vgtool.datasets.coco_phrases import resolve_coco_json
from vgtool.errors import InputError
from vgtool.evaluation.metrics import (
    coco_map,
    grounding_accuracy,
    iou_histogram,
    no_object_false_positive_rate,
    top1_ious,
)
from vgtool.writers.coco import detections_to_coco_annotations

Prediction = tuple[np.ndarray, np.ndarray]  # (boxes_xyxy [N, 4] pixels, scores [N]) by decreasing score
HISTOGRAM_BINS = 20
EXAMPLES_PER_SIDE = 8


@dataclass(frozen=True)
class EvalConfig:
    """Settings of an evaluation.

    Attributes:
        threshold: a detection scoring at least this counts as a box for a no-object phrase.
        map_min_score: detections for mAP (and the no-object rate) score at least this.
        nms_iou: NMS IoU for detections; 1.0 disables NMS.
        batch_size: images per model call.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        bf16: bf16 autocast; None means on for CUDA, off for CPU.
        num_workers: processes decoding images.
        plots: draw ``iou_histogram.png`` and ``examples_best_worst.png``.
        quiet: no progress bar.
    """

    threshold: float = 0.5
    map_min_score: float = 0.05
    nms_iou: float = 0.7
    batch_size: int = 16
    device: str = "auto"
    bf16: bool | None = None
    num_workers: int = 0
    plots: bool = True
    quiet: bool = False


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
    return {
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


def score_predictions(
    samples: Sequence[GroundingSample], predictions: Sequence[Prediction], *, config: EvalConfig
) -> dict[str, Any]:
    """All metrics of ``predictions`` (one per sample, in order) against ``samples``.

    Returns:
        ``overall`` and ``by_kind`` metric tables (rates are null where nothing is measured), the
        top-1 ``iou_histogram`` (``counts``, ``edges``) and the scoring ``settings``.
    """
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions")
    ious = top1_ious(
        [p[0] for p in predictions], [p[1] for p in predictions], [s.boxes_xyxy for s in samples]
    )
    detections = []
    for boxes_xyxy, scores in predictions:
        keep = detection_indices(boxes_xyxy, scores, config)
        detections.append((boxes_xyxy[keep], scores[keep]))
    kinds: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        kinds[sample_kind(sample)].append(i)
    counts, edges = iou_histogram(ious, bins=HISTOGRAM_BINS)
    return {
        "overall": _group_metrics(samples, predictions, detections, ious, list(range(len(samples))), config),
        "by_kind": {
            kind: _group_metrics(samples, predictions, detections, ious, kinds[kind], config)
            for kind in sorted(kinds)
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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not JSON ({err})") from None


def _dataset_category_names(data: DataConfig) -> dict[Any, str]:
    """Category names of a COCO dataset (for predictions that carry only ``category_id``)."""
    data_format = detect_format(data.path) if data.format == "auto" else data.format
    if data_format != "coco":
        return {}
    coco = _read_json(resolve_coco_json(Path(data.path), data.split))
    return (
        {cat["id"]: str(cat["name"]) for cat in coco.get("categories", [])} if isinstance(coco, dict) else {}
    )


def _prediction_records(document: Any, path: Path, data: DataConfig) -> list[tuple[Any, str, Any, Any]]:
    """``(image_id, phrase, bbox_xywh, score)`` per predicted box of a results list or COCO dict."""
    if isinstance(document, list):
        anns, phrase_entries, names = document, [], {}
    elif isinstance(document, dict) and isinstance(document.get("annotations"), list):
        anns, phrase_entries = document["annotations"], document.get("phrases") or []
        names = {cat["id"]: str(cat["name"]) for cat in document.get("categories", [])}
    else:
        raise InputError(f"{path}: expected a COCO results list or a COCO dict with 'annotations'")
    by_id = {ann.get("id"): ann for ann in anns if isinstance(ann, dict)}
    pairs: list[tuple[dict[str, Any], str]] = []
    listed: set[Any] = set()
    for entry in phrase_entries:  # a COCO-with-phrases file: phrases name their annotations
        for ann_id in entry.get("annotation_ids", []):
            if ann_id in by_id:
                pairs.append((by_id[ann_id], str(entry["phrase"])))
                listed.add(ann_id)
    dataset_names: dict[Any, str] | None = None
    for number, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise InputError(f"{path}: prediction {number} is not an object")
        if phrase_entries and ann.get("id") in listed:
            continue
        phrase = ann.get("phrase")
        if not phrase:
            if ann.get("category_id") not in names and dataset_names is None:
                dataset_names = _dataset_category_names(data)
            phrase = names.get(ann.get("category_id")) or (dataset_names or {}).get(ann.get("category_id"))
        if not phrase:
            raise InputError(
                f"{path}: prediction {number} has no 'phrase', and category {ann.get('category_id')!r} "
                "has no name in the file's or the dataset's 'categories'"
            )
        pairs.append((ann, str(phrase)))
    records = []
    for ann, phrase in pairs:
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            raise InputError(f"{path}: prediction {ann.get('id', '?')} has no 'bbox' [x, y, w, h]: {bbox!r}")
        if "image_id" not in ann:
            raise InputError(f"{path}: prediction {ann.get('id', '?')} has no 'image_id'")
        score = ann.get("score", 1.0)
        if not isinstance(score, int | float):
            raise InputError(f"{path}: prediction {ann.get('id', '?')} has a non-numeric 'score': {score!r}")
        records.append((ann["image_id"], phrase.strip(), bbox, float(score)))
    return records


def _path_suffixes(paths: Sequence[Path]) -> dict[str, list[Path]]:
    """Every trailing run of path parts (``a.jpg``, ``val/a.jpg``, ...) -> the paths ending so."""
    index: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        parts = [part for part in path.as_posix().split("/") if part not in ("", ".")]
        for k in range(1, len(parts) + 1):
            index["/".join(parts[-k:])].append(path)
    return index


def _match_file_name(file_name: str, suffixes: dict[str, list[Path]]) -> Path | None:
    parts = [part for part in PurePosixPath(file_name.replace("\\", "/")).parts if part not in ("/", ".")]
    for key in ("/".join(parts), parts[-1] if parts else ""):
        found = suffixes.get(key, [])
        if found:
            return found[0] if len(found) == 1 else None
    return None


def load_prediction_file(
    predictions: Path, samples: Sequence[GroundingSample], data: DataConfig
) -> tuple[list[Prediction], dict[str, int]]:
    """Read a predictions file and give each sample its boxes (see :func:`evaluate_predictions`).

    Returns:
        Per sample, ``(boxes_xyxy, scores)`` by decreasing score (empty when nothing matched), and
        counts: ``boxed_samples_without_prediction`` (samples with a ground-truth box that no
        prediction matched), ``unmatched_predictions`` (boxes whose image or phrase is no sample's)
        and ``unmatched_images`` (file names matching no dataset image, or more than one).
    """
    path = Path(predictions)
    document = _read_json(path)
    records = _prediction_records(document, path, data)
    file_names = None
    if isinstance(document, dict) and isinstance(document.get("images"), list):
        file_names = {image.get("id"): str(image.get("file_name", "")) for image in document["images"]}

    image_key: dict[Any, Any] = {}  # prediction image_id -> the key of a dataset image
    unmatched_images = 0
    if file_names is not None:
        suffixes = _path_suffixes(sorted({s.image_path for s in samples}))
        for image_id, file_name in file_names.items():
            image_key[image_id] = _match_file_name(file_name, suffixes)
            unmatched_images += image_key[image_id] is None
        sample_keys = [(s.image_path, s.phrase.strip()) for s in samples]
    else:
        sample_keys = [(str(s.image_id), s.phrase.strip()) for s in samples]

    grouped: dict[tuple[Any, str], list[tuple[list[float], float]]] = defaultdict(list)
    for image_id, phrase, bbox_xywh, score in records:
        key = image_key.get(image_id) if file_names is not None else str(image_id)
        grouped[(key, phrase)].append((bbox_xywh, score))
    wanted = set(sample_keys)
    unmatched_predictions = sum(len(boxes) for key, boxes in grouped.items() if key not in wanted)

    results: list[Prediction] = []
    for key in sample_keys:
        boxes = grouped.get(key, [])
        bbox_xywh = np.asarray([b for b, _ in boxes], dtype=np.float32).reshape(-1, 4)
        scores = np.asarray([s for _, s in boxes], dtype=np.float32)
        order = np.argsort(-scores, kind="stable")
        boxes_xyxy = np.concatenate([bbox_xywh[:, :2], bbox_xywh[:, :2] + bbox_xywh[:, 2:]], axis=1)
        results.append((boxes_xyxy[order], scores[order]))
    counts = {
        "boxed_samples_without_prediction": sum(
            len(scores) == 0 and len(sample.boxes_xyxy) > 0
            for sample, (_, scores) in zip(samples, results, strict=True)
        ),
        "unmatched_predictions": unmatched_predictions,
        "unmatched_images": unmatched_images,
    }
    return results, counts


# ---- plots --------------------------------------------------------------------------------------


def plot_iou_histogram(path: Path, ious: np.ndarray) -> None:
    """Bar chart of the top-1 IoUs (NaNs skipped) with the 0.5 line."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    counts, edges = iou_histogram(ious, bins=HISTOGRAM_BINS)
    valid = ious[~np.isnan(ious)]
    fig = Figure(figsize=(6.4, 4.0), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4c72b0", edgecolor="white")
    ax.axvline(0.5, color="#c44e52", linestyle="--", linewidth=1, label="IoU 0.5")
    ax.set_xlim(0, 1)
    ax.set_xlabel("top-1 IoU with the best-matching ground-truth box")
    ax.set_ylabel("phrases")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if len(valid):
        ax.set_title(f"Top-1 IoU of {len(valid)} phrases (mean {valid.mean():.3f})")
    else:
        ax.set_title("No phrase with a ground-truth box")
    ax.legend(loc="upper center")
    fig.savefig(path, metadata={"Software": None})


def _thumbnail(sample: GroundingSample, cache: dict[Path, Any], max_side: int = 384) -> tuple[Any, float]:
    """The displayed image scaled to at most ``max_side``, and the scale factor applied."""
    from vgtool.data.decode import ImageDecodeError, load_rgb

    if sample.image_path not in cache:
        try:
            image = load_rgb(sample.image_path)
        except ImageDecodeError as err:
            raise InputError(f"{sample.image_path}: {err}") from err
        scale = min(1.0, max_side / max(image.width, image.height))
        if scale < 1.0:
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        cache[sample.image_path] = (np.asarray(image), scale)
    return cache[sample.image_path]


def plot_best_worst(
    path: Path,
    samples: Sequence[GroundingSample],
    predictions: Sequence[Prediction],
    ious: np.ndarray,
    per_side: int = EXAMPLES_PER_SIDE,
) -> None:
    """The best and worst samples by top-1 IoU: true boxes green, the top predicted box red."""
    import textwrap

    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    order = sorted((i for i in range(len(samples)) if not np.isnan(ious[i])), key=lambda i: (-ious[i], i))
    n_best = min(per_side, (len(order) + 1) // 2)
    sides = [("Best", order[:n_best]), ("Worst", list(reversed(order[n_best:]))[:per_side])]
    sides = [(title, chosen) for title, chosen in sides if chosen]
    columns = 4
    rows = [math.ceil(len(chosen) / columns) for _, chosen in sides] or [1]
    fig = Figure(figsize=(3.2 * columns, 3.5 * sum(rows) + 0.6), dpi=100, layout="constrained")
    if not sides:
        fig.text(0.5, 0.5, "No phrase with a ground-truth box", ha="center", va="center")
        fig.savefig(path, metadata={"Software": None})
        return
    cache: dict[Path, Any] = {}
    subfigs = fig.subfigures(len(sides), 1, height_ratios=rows, squeeze=False)[:, 0]
    for subfig, (title, chosen) in zip(subfigs, sides, strict=True):
        subfig.suptitle(f"{title} {len(chosen)} by top-1 IoU", fontsize=13, fontweight="bold")
        axes = subfig.subplots(math.ceil(len(chosen) / columns), columns, squeeze=False).ravel()
        for ax in axes:
            ax.axis("off")
        for ax, i in zip(axes, chosen, strict=False):
            pixels, scale = _thumbnail(samples[i], cache)
            ax.imshow(pixels)
            boxes = [(box, "#2ca02c") for box in samples[i].boxes_xyxy]
            pred_boxes_xyxy, scores = predictions[i]
            if len(scores):
                boxes.append((pred_boxes_xyxy[int(np.argmax(scores))], "#d62728"))
            for (x0, y0, x1, y1), colour in boxes:
                ax.add_patch(
                    Rectangle(
                        (x0 * scale, y0 * scale),
                        (x1 - x0) * scale,
                        (y1 - y0) * scale,
                        fill=False,
                        edgecolor=colour,
                        linewidth=2,
                    )
                )
            phrase = textwrap.shorten(samples[i].phrase, width=60, placeholder="...")
            ax.set_title(f"{textwrap.fill(phrase, 34)}\nIoU {ious[i]:.2f}", fontsize=9)
    fig.legend(
        handles=[
            Patch(fill=False, edgecolor="#2ca02c", linewidth=2, label="ground truth"),
            Patch(fill=False, edgecolor="#d62728", linewidth=2, label="top prediction"),
        ],
        loc="outside lower center",
        ncol=2,
    )
    fig.savefig(path, metadata={"Software": None})


# ---- entry points -------------------------------------------------------------------------------


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
    from vgtool.checkpoint import load_checkpoint
    from vgtool.device import resolve_device
    from vgtool.evaluation.predict import predict_samples
    from vgtool.models.bundled import resolve_model_path

    config = config or EvalConfig()
    samples = _load_samples(data)
    device = resolve_device(config.device)
    net = load_checkpoint(resolve_model_path(model), device=device)
    predictions = predict_samples(
        net,
        samples,
        batch_size=config.batch_size,
        device=device,
        bf16=device.type == "cuda" if config.bf16 is None else config.bf16,
        progress=not config.quiet,
        num_workers=config.num_workers,
    )
    metrics = score_predictions(samples, predictions, config=config)
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
        config: evaluation settings (``batch_size``, ``device`` and ``bf16`` are unused).

    Returns:
        The metrics, as written to ``metrics.json``.
    """
    config = config or EvalConfig()
    samples = _load_samples(data)
    per_sample, counts = load_prediction_file(Path(predictions), samples, data)
    metrics = score_predictions(samples, per_sample, config=config)
    metrics["matching"] = counts
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_report(out_dir, samples, per_sample, metrics, config.plots)
    return metrics
