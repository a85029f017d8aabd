"""The training loss of VL-GTR, as in DETR's ``SetCriterion``.

Each decoder layer's predictions are matched to the target boxes with :class:`HungarianMatcher`;
matched queries learn to say "object" and to regress their target box, all others to say "no-object".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vgtool.box_ops import cxcywh_to_xyxy, distance_box_iou, generalized_box_iou
from vgtool.errors import ConfigError
from vgtool.models.config import NO_OBJECT, OBJECT
from vgtool.training.matcher import HungarianMatcher

_PAIRWISE_IOU = {"giou": generalized_box_iou, "diou": distance_box_iou}


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and matcher costs.

    Attributes:
        no_object_weight: cross-entropy weight of the no-object class (the object class weighs 1);
            must be > 0.
        class_weight, bbox_weight, giou_weight: weights of ``loss_ce``, ``loss_bbox`` and ``loss_giou``
            in the total ``loss``.
        box_iou_loss: ``giou`` or ``diou``, the overlap loss reported as ``loss_giou``.
        aux_loss: also supervise every earlier decoder layer (``aux_outputs``) and, for two-stage
            models, the token proposals (``enc_outputs``, losses suffixed ``_enc``).
        match_class, match_bbox, match_giou: the matcher's cost weights (its overlap cost is always GIoU).
    """

    no_object_weight: float = 0.1
    class_weight: float = 1.0
    bbox_weight: float = 5.0
    giou_weight: float = 2.0
    box_iou_loss: Literal["giou", "diou"] = "giou"
    aux_loss: bool = True
    match_class: float = 1.0
    match_bbox: float = 5.0
    match_giou: float = 2.0

    def __post_init__(self) -> None:
        if self.box_iou_loss not in _PAIRWISE_IOU:
            raise ConfigError(
                f"box_iou_loss must be one of {sorted(_PAIRWISE_IOU)}, not {self.box_iou_loss!r}"
            )
        if self.no_object_weight <= 0:
            raise ConfigError(f"no_object_weight must be > 0, not {self.no_object_weight}")
        names = ("class_weight", "bbox_weight", "giou_weight", "match_class", "match_bbox", "match_giou")
        negative = [name for name in names if getattr(self, name) < 0]
        if negative:
            raise ConfigError(f"loss weights must be >= 0: {', '.join(negative)}")
        if self.match_class == self.match_bbox == self.match_giou == 0:
            raise ConfigError("match_class, match_bbox and match_giou cannot all be 0")


class SetCriterion(nn.Module):
    """Hungarian-matched classification and box losses over the final and auxiliary decoder layers."""

    def __init__(self, config: LossConfig):
        super().__init__()
        self.config = config
        self.matcher = HungarianMatcher(config.match_class, config.match_bbox, config.match_giou)
        empty_weight = torch.ones(2)
        empty_weight[NO_OBJECT] = config.no_object_weight
        self.register_buffer("empty_weight", empty_weight, persistent=False)
        self.weights = {
            "loss_ce": config.class_weight,
            "loss_bbox": config.bbox_weight,
            "loss_giou": config.giou_weight,
        }

    def forward(
        self,
        outputs: dict[str, torch.Tensor | list[dict[str, torch.Tensor]]],
        targets: list[dict[str, torch.Tensor]],
        num_boxes: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute every loss term and their weighted total.

        Args:
            outputs: the model's output dict: ``pred_logits`` ``[K, Q, 2]``, ``pred_boxes`` ``[K, Q, 4]``
                cxcywh in [0, 1], and ``aux_outputs`` (used when ``aux_loss`` is on).
            targets: K dicts with ``boxes`` ``[n_k, 4]`` cxcywh in [0, 1] on the outputs' device;
                ``n_k`` may be 0 (the phrase names nothing in the image).
            num_boxes: the divisor of the box losses; defaults to the number of target boxes in this
                batch. Distributed training passes the mean count over all processes. Clamped to >= 1.

        Returns:
            ``loss_ce``, ``loss_bbox`` (L1 on cxcywh) and ``loss_giou`` (``1 - GIoU``, or ``1 - DIoU``
            when ``box_iou_loss`` is ``diou``) as scalars; the same for each auxiliary layer ``i``
            suffixed ``_i``; and ``loss``, the weighted sum of all of them.
        """
        if num_boxes is None:
            num_boxes = sum(len(t["boxes"]) for t in targets)
        num_boxes = max(float(num_boxes), 1.0)

        layers = [("", outputs)]
        if self.config.aux_loss:
            layers += [(f"_{i}", aux) for i, aux in enumerate(outputs.get("aux_outputs", []))]
            if "enc_outputs" in outputs:
                layers.append(("_enc", outputs["enc_outputs"]))
        losses: dict[str, torch.Tensor] = {}
        total = outputs["pred_logits"].new_zeros(())
        for suffix, layer_outputs in layers:
            for name, value in self._layer_losses(layer_outputs, targets, num_boxes).items():
                losses[name + suffix] = value
                total = total + self.weights[name] * value
        losses["loss"] = total
        return losses

    def _layer_losses(
        self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]], num_boxes: float
    ) -> dict[str, torch.Tensor]:
        """The three unweighted losses of one decoder layer (in fp32, whatever the autocast dtype)."""
        outputs = {"pred_logits": outputs["pred_logits"].float(), "pred_boxes": outputs["pred_boxes"].float()}
        indices = self.matcher(outputs, targets)
        pair_idx = torch.cat([torch.full_like(src, k) for k, (src, _) in enumerate(indices)])
        query_idx = torch.cat([src for src, _ in indices])

        logits = outputs["pred_logits"]  # [K, Q, 2]
        target_classes = torch.full(logits.shape[:2], NO_OBJECT, dtype=torch.int64, device=logits.device)
        target_classes[pair_idx, query_idx] = OBJECT
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight)

        pred_boxes_cxcywh = outputs["pred_boxes"][pair_idx, query_idx]  # [M, 4]
        tgt_boxes_cxcywh = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices, strict=True)])
        tgt_boxes_cxcywh = tgt_boxes_cxcywh.to(pred_boxes_cxcywh)
        loss_bbox = F.l1_loss(pred_boxes_cxcywh, tgt_boxes_cxcywh, reduction="none").sum() / num_boxes
        iou = _PAIRWISE_IOU[self.config.box_iou_loss](
            cxcywh_to_xyxy(pred_boxes_cxcywh), cxcywh_to_xyxy(tgt_boxes_cxcywh)
        ).diagonal()
        loss_giou = (1 - iou).sum() / num_boxes
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}
