"""Turn raw VL-GTR outputs into scored pixel boxes per (image, phrase) pair."""

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
        boxes_xyxy = box_ops.scale_normalized(boxes_xyxy, sizes_wh[:, None, 0], sizes_wh[:, None, 1])
        results = []
        for pair_boxes, pair_scores, (width, height) in zip(
            boxes_xyxy, scores, sizes_wh.tolist(), strict=True
        ):
            pair_boxes = box_ops.clip_xyxy(pair_boxes, width, height)
            keep = pair_scores >= self.config.threshold
            keep &= (pair_boxes[:, 2] > pair_boxes[:, 0]) & (pair_boxes[:, 3] > pair_boxes[:, 1])
            pair_boxes, pair_scores = pair_boxes[keep], pair_scores[keep]
            if self.config.nms_iou < 1.0:
                order = box_ops.nms(pair_boxes, pair_scores, self.config.nms_iou)
            else:
                order = pair_scores.argsort(descending=True, stable=True)
            if self.config.top_k > 0:
                order = order[: self.config.top_k]
            results.append((pair_boxes[order], pair_scores[order]))
        return results
