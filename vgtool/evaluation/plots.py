"""Evaluation plots: the top-1 IoU histogram and a grid of the best and worst examples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vgtool.datasets import GroundingSample
from vgtool.errors import InputError
from vgtool.evaluation.metrics import iou_histogram
from vgtool.evaluation.prediction_file import Prediction

HISTOGRAM_BINS = 20
EXAMPLES_PER_SIDE = 8


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
