"""Turn raw VL-GTR outputs into scored pixel boxes per (image, phrase) pair; the selection step
(threshold, NMS, top-k) serves every grounder."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vgtool import box_ops
from vgtool.models.config import OBJECT


@dataclass(frozen=True)
class PostProcessConfig:
    """How raw query predictions become detections.

    Attributes:
        threshold: keep boxes whose object probability is at least this.
        top_k: keep at most this many boxes per phrase (after NMS); 0 keeps all.
        nms_iou: suppress boxes overlapping a better one by more than this IoU; 1.0 disables NMS.
    """

    threshold: float = 0.5
    top_k: int = 0
    nms_iou: float = 0.7


class PostProcess:
    """Scores, thresholds, suppresses and scales predictions. Holds no state between calls."""

    def __init__(self, config: PostProcessConfig | None = None):
        self.config = config or PostProcessConfig()

    @torch.no_grad()
    def __call__(
        self, outputs: dict[str, torch.Tensor], sizes_wh: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Post-process K pairs.

        Args:
            outputs: ``pred_logits`` ``[K, Q, 2]`` and ``pred_boxes`` ``[K, Q, 4]`` cxcywh in [0, 1].
            sizes_wh: ``[K, 2]`` displayed width and height of each pair's image.

        Returns:
            Per pair, ``(boxes_xyxy [N, 4] in pixels clipped to the image, scores [N])``, by
            decreasing score.
        """
        scores = outputs["pred_logits"].float().softmax(-1)[..., OBJECT]  # [K, Q]
        boxes_xyxy = box_ops.cxcywh_to_xyxy(outputs["pred_boxes"].float())  # [K, Q, 4] in [0, 1]
        sizes_wh = sizes_wh.to(boxes_xyxy)
        width, height = sizes_wh[:, None, 0], sizes_wh[:, None, 1]  # [K, 1] each
        boxes_xyxy = box_ops.clip_xyxy(box_ops.scale_normalized(boxes_xyxy, width, height), width, height)
        return select_detections(boxes_xyxy, scores, self.config)


# Largest [pairs, n, n] IoU tensor NMS builds at once (64M elements, 256 MB of float32).
MAX_NMS_ELEMENTS = 1 << 26
# With a top-k, the boxes per pair NMS looks at first (at least 4 x top_k; 4x more while unsettled).
NMS_PREFIX = 32


@torch.no_grad()
def select_detections(
    boxes_xyxy: torch.Tensor, scores: torch.Tensor, config: PostProcessConfig
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Threshold, NMS and top-k for K (image, phrase) pairs at once, whatever model scored them.

    Only the best ``n`` boxes of each pair take part, ``n`` the most any pair has at or above the
    threshold (the others can neither be kept nor suppress one, so the result is the same), and
    pairs go through NMS in chunks whose ``[pairs, n, n]`` IoU fits :data:`MAX_NMS_ELEMENTS`: models
    with thousands of boxes per image (OWL) stay within memory.

    With a top-k, NMS first runs on each pair's best few boxes only and looks further only for the
    pairs that kept fewer than ``top_k`` of them while better-scoring candidates remain: greedy NMS
    decides each box from the boxes scored above it, so the first ``top_k`` kept are the same.

    Args:
        boxes_xyxy: ``[K, Q, 4]`` pixels of each pair's image, clipped to it.
        scores: ``[K, Q]`` each box's score for its pair's phrase.

    Returns:
        Per pair, ``(boxes_xyxy [N, 4], scores [N])`` float32 on the CPU, by decreasing score; boxes
        with no area are dropped.
    """
    count = int((scores >= config.threshold).sum(dim=1).max()) if scores.numel() else 0
    by_prefix = config.top_k > 0 and config.nms_iou < 1.0 and count > max(NMS_PREFIX, 4 * config.top_k)
    if count < scores.shape[1] or by_prefix:  # the order _select sorts in, ties included
        scores, order = scores.sort(dim=1, descending=True, stable=True)
        scores, order = scores[:, :count], order[:, :count]
        boxes_xyxy = boxes_xyxy.gather(1, order.unsqueeze(-1).expand(-1, -1, 4))
    if not by_prefix:
        return _select_in_chunks(boxes_xyxy, scores, config)
    out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(scores)
    pending = torch.arange(len(scores), device=scores.device)
    prefix = min(count, max(NMS_PREFIX, 4 * config.top_k))
    while len(pending):
        found = _select_in_chunks(boxes_xyxy[pending, :prefix], scores[pending, :prefix], config)
        # a pair is settled when it kept top_k boxes, or no candidate is left past the prefix
        more = (
            scores[pending, prefix] >= config.threshold
            if prefix < count
            else torch.zeros(len(pending), dtype=torch.bool, device=scores.device)
        )
        unsettled = []
        for row, result, has_more in zip(pending.tolist(), found, more.tolist(), strict=True):
            if len(result[1]) >= config.top_k or not has_more:
                out[row] = result
            else:
                unsettled.append(row)
        pending = torch.tensor(unsettled, dtype=torch.long, device=scores.device)
        prefix = min(count, 4 * prefix)
    return out  # type: ignore[return-value]


def _select_in_chunks(
    boxes_xyxy: torch.Tensor, scores: torch.Tensor, config: PostProcessConfig
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`_select` over pairs in chunks whose ``[pairs, n, n]`` IoU fits :data:`MAX_NMS_ELEMENTS`."""
    count = scores.shape[1]
    chunk = max(1, MAX_NMS_ELEMENTS // max(1, count * count)) if config.nms_iou < 1.0 else len(scores)
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    for start in range(0, len(scores), chunk):
        part = slice(start, start + chunk)
        out.extend(_select(boxes_xyxy[part], scores[part], config))
    return out


def _select(
    boxes_xyxy: torch.Tensor, scores: torch.Tensor, config: PostProcessConfig
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`select_detections` on one chunk of pairs."""
    # All pairs at once: sort by score, mark candidates, suppress, cut to top_k.
    order = scores.argsort(dim=1, descending=True, stable=True)  # [K, Q]
    scores = scores.gather(1, order)
    boxes_xyxy = boxes_xyxy.gather(1, order.unsqueeze(-1).expand(-1, -1, 4))
    keep = scores >= config.threshold
    keep &= (boxes_xyxy[..., 2] > boxes_xyxy[..., 0]) & (boxes_xyxy[..., 3] > boxes_xyxy[..., 1])
    if config.nms_iou < 1.0:
        keep = box_ops.batched_nms_keep(boxes_xyxy, keep, config.nms_iou)
    if config.top_k > 0:
        keep &= keep.cumsum(dim=1) <= config.top_k
    boxes_np, scores_np, keep_np = boxes_xyxy.cpu().numpy(), scores.cpu().numpy(), keep.cpu().numpy()
    return [
        (torch.from_numpy(b[k]), torch.from_numpy(s[k]))
        for b, s, k in zip(boxes_np, scores_np, keep_np, strict=True)
    ]
