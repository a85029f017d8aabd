"""Pure box math. Every function names its box convention.

Conventions used across vgtool:
- ``cxcywh``: centre x, centre y, width, height. The model predicts these normalised to [0, 1]
  relative to the displayed image.
- ``xyxy``: left, top, right, bottom. Used for IoU, NMS, crops and overlays, in pixels.
- ``xywh``: left, top, width, height in pixels. Only COCO files use it.

Functions accept tensors of shape ``[..., 4]`` and return tensors of the same leading shape.
"""

from __future__ import annotations

import torch

from vgtool.torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()

from torchvision.ops import box_iou as _tv_box_iou  # noqa: E402
from torchvision.ops import distance_box_iou as _tv_distance_box_iou  # noqa: E402
from torchvision.ops import generalized_box_iou as _tv_generalized_box_iou  # noqa: E402


def cxcywh_to_xyxy(boxes_cxcywh: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes_cxcywh.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def xyxy_to_cxcywh(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = boxes_xyxy.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def xyxy_to_xywh(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = boxes_xyxy.unbind(-1)
    return torch.stack([x0, y0, x1 - x0, y1 - y0], dim=-1)


def xywh_to_xyxy(boxes_xywh: torch.Tensor) -> torch.Tensor:
    x, y, w, h = boxes_xywh.unbind(-1)
    return torch.stack([x, y, x + w, y + h], dim=-1)


def scale_normalized(boxes: torch.Tensor, width: float | torch.Tensor, height: float | torch.Tensor):
    """Scale boxes from [0, 1] to pixels (any of the xyxy / cxcywh / xywh layouts).

    ``width`` and ``height`` may be scalars or tensors broadcastable to ``boxes[..., 0]``.
    """
    width = torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device)
    height = torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device)
    scale = torch.stack([width, height, width, height], dim=-1)
    return boxes * scale


def normalize_pixels(boxes: torch.Tensor, width: float | torch.Tensor, height: float | torch.Tensor):
    """Inverse of :func:`scale_normalized`: pixels to [0, 1]."""
    width = torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device)
    height = torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device)
    scale = torch.stack([width, height, width, height], dim=-1)
    return boxes / scale


def clip_xyxy(
    boxes_xyxy: torch.Tensor, width: float | torch.Tensor, height: float | torch.Tensor
) -> torch.Tensor:
    """Clip pixel boxes to the image ``[0, width] x [0, height]`` (``width``/``height`` may be
    tensors that broadcast against ``boxes_xyxy[..., 0]``, e.g. ``[K, 1]`` for ``[K, Q, 4]``)."""
    w = torch.as_tensor(width, dtype=boxes_xyxy.dtype, device=boxes_xyxy.device)
    h = torch.as_tensor(height, dtype=boxes_xyxy.dtype, device=boxes_xyxy.device)
    x0, y0, x1, y1 = boxes_xyxy.clamp(min=0).unbind(-1)
    return torch.stack([x0.minimum(w), y0.minimum(h), x1.minimum(w), y1.minimum(h)], dim=-1)


def hflip_cxcywh(boxes_cxcywh: torch.Tensor) -> torch.Tensor:
    """Mirror normalised cxcywh boxes left-right."""
    cx, cy, w, h = boxes_cxcywh.unbind(-1)
    return torch.stack([1.0 - cx, cy, w, h], dim=-1)


def box_area(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    return (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]).clamp(min=0) * (
        boxes_xyxy[..., 3] - boxes_xyxy[..., 1]
    ).clamp(min=0)


def box_iou(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU: ``[N, 4]`` x ``[M, 4]`` -> ``[N, M]``."""
    return _tv_box_iou(boxes1_xyxy, boxes2_xyxy)


def generalized_box_iou(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU in [-1, 1]: ``[N, 4]`` x ``[M, 4]`` -> ``[N, M]``."""
    return _tv_generalized_box_iou(boxes1_xyxy, boxes2_xyxy)


def distance_box_iou(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor) -> torch.Tensor:
    """Pairwise DIoU in [-1, 1]: ``[N, 4]`` x ``[M, 4]`` -> ``[N, M]``."""
    return _tv_distance_box_iou(boxes1_xyxy, boxes2_xyxy)


def elementwise_iou(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor) -> torch.Tensor:
    """IoU of matching rows: ``[N, 4]`` x ``[N, 4]`` -> ``[N]``."""
    lt = torch.maximum(boxes1_xyxy[..., :2], boxes2_xyxy[..., :2])
    rb = torch.minimum(boxes1_xyxy[..., 2:], boxes2_xyxy[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(boxes1_xyxy) + box_area(boxes2_xyxy) - inter
    return inter / union.clamp(min=1e-12)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The logit of ``x`` in [0, 1], clamped away from 0 and 1 (box refinement works in this space)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def nms(boxes_xyxy: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression in pure torch.

    torchvision's compiled ``nms`` is not always loadable (CPU torch with a CUDA torchvision wheel),
    and vgtool suppresses among at most a few dozen boxes per phrase, so a matrix version is enough.

    Args:
        boxes_xyxy: ``[N, 4]`` boxes.
        scores: ``[N]`` scores.
        iou_threshold: boxes overlapping a kept, higher-scoring box by more than this are dropped.

    Returns:
        ``[K]`` int64 indices of kept boxes, by decreasing score.
    """
    if boxes_xyxy.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes_xyxy.device)
    order = scores.argsort(descending=True, stable=True)
    iou = box_iou(boxes_xyxy[order], boxes_xyxy[order])
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes_xyxy.device)
    for i in range(len(order)):
        if keep[i]:
            suppress = iou[i] > iou_threshold
            suppress[: i + 1] = False
            keep &= ~suppress
    return order[keep]


def batched_box_iou(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU within each batch row: ``[..., N, 4]`` x ``[..., M, 4]`` -> ``[..., N, M]``
    (NaN where both boxes are empty)."""
    lt = torch.maximum(boxes1_xyxy[..., :, None, :2], boxes2_xyxy[..., None, :, :2])
    rb = torch.minimum(boxes1_xyxy[..., :, None, 2:], boxes2_xyxy[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(boxes1_xyxy)[..., :, None] + box_area(boxes2_xyxy)[..., None, :] - inter
    return inter / union


def batched_nms_keep(sorted_boxes_xyxy: torch.Tensor, candidates: torch.Tensor, iou_threshold: float):
    """Greedy non-maximum suppression of many small sets at once (as :func:`nms` on each).

    Args:
        sorted_boxes_xyxy: ``[K, Q, 4]`` boxes of K sets, each sorted by decreasing score.
        candidates: ``[K, Q]`` bool, the boxes that take part (the others neither stay nor suppress).
        iou_threshold: a box overlapping a kept, higher-scoring one by more than this is dropped.

    Returns:
        ``[K, Q]`` bool, the boxes kept.
    """
    iou = batched_box_iou(sorted_boxes_xyxy, sorted_boxes_xyxy)  # [K, Q, Q]
    num = sorted_boxes_xyxy.shape[1]
    later = torch.ones(num, num, dtype=torch.bool, device=iou.device).triu(diagonal=1)  # [i, j]: j > i
    overlaps = (iou > iou_threshold) & later
    keep = candidates.clone()
    for i in range(num):  # Q steps, each over all K sets
        keep &= ~(keep[:, i : i + 1] & overlaps[:, i])
    return keep


def hflip_xyxy(boxes_xyxy: torch.Tensor, width: float) -> torch.Tensor:
    """Mirror pixel xyxy boxes left-right in an image ``width`` pixels wide (``x -> width - x``)."""
    x0, y0, x1, y1 = boxes_xyxy.unbind(-1)
    return torch.stack([width - x1, y0, width - x0, y1], dim=-1)


def translate_xyxy(boxes_xyxy: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """Shift pixel xyxy boxes by ``(dx, dy)``; a crop at ``(left, top)`` is ``(-left, -top)``."""
    offset = torch.tensor([dx, dy, dx, dy], dtype=boxes_xyxy.dtype, device=boxes_xyxy.device)
    return boxes_xyxy + offset
