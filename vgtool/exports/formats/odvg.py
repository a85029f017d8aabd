"""ODVG grounding JSONL (GroundingDINO / MM-Grounding-DINO training), one file per subset.

Each line is one image: ``{"filename", "height", "width", "grounding": {"caption", "regions":
[{"bbox": [x0, y0, x1, y1], "phrase", "tokens_positive": [[start, end]], "score"}]}}``, boxes in
xyxy pixels of the displayed image (``score`` is vgtool's; training readers ignore it). The caption is the exported phrases joined as ``"a. b. c."`` (the
same for every image, so a phrase without a region says "not in this image"); each region points
at its phrase's characters. ``filename`` is the run's ``file_name``, relative to ``images/``
(or, with ``--images-mode none``, to the run's image root). :func:`vgtool.datasets.odvg.load_odvg`
reads it back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vgtool.exports.plan import ExportItem, ExportPlan

BBOX_DECIMALS = 2


def odvg_caption(phrases: Sequence[str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """``"a. b. c."`` and each phrase's ``(start, end)`` character span in it."""
    spans: dict[str, tuple[int, int]] = {}
    caption = ""
    for phrase in dict.fromkeys(phrases):
        if caption:
            caption += " "
        spans[phrase] = (len(caption), len(caption) + len(phrase))
        caption += phrase + "."
    return caption, spans


def odvg_record(item: ExportItem, phrases: Sequence[str]) -> dict[str, Any]:
    """One line of the file; phrases of boxes missing from ``phrases`` are added to the caption."""
    image = item.image
    caption, spans = odvg_caption([*phrases, *(b.phrase for b in image.boxes)])
    regions = [
        {
            "bbox": [round(v, BBOX_DECIMALS) for v in box.box_xyxy],
            "phrase": box.phrase,
            "tokens_positive": [list(spans[box.phrase])],
            "score": box.score,
        }
        for box in image.boxes
    ]
    return {
        "filename": item.name,
        "height": image.height,
        "width": image.width,
        "grounding": {"caption": caption, "regions": regions},
    }


class OdvgFormat:
    name = "odvg"
    layout = "keep"
    summary = "ODVG grounding JSONL (GroundingDINO training): <subset>.jsonl, images/"

    def image_path(self, item: ExportItem) -> str:
        return f"images/{item.name}"

    def write(self, plan: ExportPlan, out_dir: Path) -> dict[str, list[str]]:
        written: dict[str, list[str]] = {}
        out_dir.mkdir(parents=True, exist_ok=True)
        for subset in plan.subsets:
            items = plan.subset_items(subset)
            relative = f"{subset}.jsonl"
            lines = [json.dumps(odvg_record(item, plan.phrases), ensure_ascii=False) + "\n" for item in items]
            (out_dir / relative).write_text("".join(lines), encoding="utf-8")
            written.update({item.image.file_name: [relative] for item in items})
        return written
