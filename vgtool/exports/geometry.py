"""The box math the exports share (pure, no torch): boxes are xyxy pixels of the displayed image."""

from __future__ import annotations

BoxXYXY = tuple[float, float, float, float]


def xywh_to_xyxy(bbox_xywh: tuple[float, float, float, float]) -> BoxXYXY:
    x, y, w, h = bbox_xywh
    return (x, y, x + w, y + h)


def clip_xyxy(box_xyxy: BoxXYXY, width: float, height: float) -> BoxXYXY:
    """``box_xyxy`` clipped to a ``width`` x ``height`` image, never inside out."""
    x0, y0, x1, y1 = box_xyxy
    x0, y0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
    return (x0, y0, min(max(x1, x0), width), min(max(y1, y0), height))
