"""Read ODVG grounding JSONL (the GroundingDINO / MM-Grounding-DINO training format).

Each line is one image: ``{"filename", "height", "width", "grounding": {"caption", "regions":
[{"bbox": [x0, y0, x1, y1], "phrase"}, ...]}}`` with boxes as xyxy pixels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vgtool.datasets.sample import GroundingSample
from vgtool.errors import InputError


def _line_samples(record: dict[str, Any], image_root: Path, first_id: int) -> list[GroundingSample]:
    """One sample per distinct phrase of one image line, phrases in order of first appearance."""
    grounding = record["grounding"]
    boxes_by_phrase: dict[str, list[np.ndarray]] = {}
    for region in grounding["regions"]:
        phrase = str(region["phrase"]).strip()
        if not phrase:
            raise ValueError("a region has an empty phrase")
        box_xyxy = np.asarray(region["bbox"], dtype=np.float32).reshape(-1, 4)
        boxes_by_phrase.setdefault(phrase, []).append(box_xyxy)
    filename = str(record["filename"])
    return [
        GroundingSample(
            image_path=image_root / filename,
            phrase=phrase,
            boxes_xyxy=np.concatenate(boxes),
            image_id=filename,
            width=record.get("width"),
            height=record.get("height"),
            sample_id=first_id + index,
            meta={"caption": grounding.get("caption", "")},
        )
        for index, (phrase, boxes) in enumerate(boxes_by_phrase.items())
    ]


def load_odvg(jsonl_path: str | Path, image_root: str | Path | None = None) -> list[GroundingSample]:
    """One sample per (image line, phrase) of an ODVG grounding file.

    Args:
        jsonl_path: the ``.jsonl`` file.
        image_root: the folder ``filename`` is relative to; defaults to the file's folder.

    Returns:
        Samples in file order, each with every box of its phrase in that image; ``sample_id`` counts
        from 1 in that order and ``meta["caption"]`` holds the line's caption.

    Raises:
        InputError: the file is missing, a line is not JSON, or a line is not a grounding record; the
            message names the file and the line number.
    """
    path = Path(jsonl_path)
    root = Path(image_root) if image_root is not None else path.parent
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from None
    samples: list[GroundingSample] = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{line_no}: not JSON: {err.msg}") from None
        if not isinstance(record, dict) or "grounding" not in record:
            raise InputError(f"{path}:{line_no}: not an ODVG grounding record (no 'grounding' object)")
        try:
            samples += _line_samples(record, root, first_id=len(samples) + 1)
        except (KeyError, TypeError, ValueError) as err:
            reason = f"no {err} field" if isinstance(err, KeyError) else str(err)
            raise InputError(f"{path}:{line_no}: bad grounding record: {reason}") from None
    return samples
