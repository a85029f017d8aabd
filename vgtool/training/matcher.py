"""One-to-one assignment of predicted boxes to target boxes, as in DETR's ``models/matcher.py``."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from vgtool.box_ops import cxcywh_to_xyxy, generalized_box_iou
from vgtool.models.config import OBJECT


class HungarianMatcher(nn.Module):
    """Match each target box to one query by minimising a weighted cost.

    The cost of giving target ``j`` to query ``i`` is
    ``cost_class * -p_i(object) + cost_bbox * L1(box_i, box_j) + cost_giou * -GIoU(box_i, box_j)``.
    Queries left unmatched are meant to predict no-object.
    """

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("all matcher costs are 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    @torch.no_grad()
    def forward(
        self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match K (image, phrase) pairs at once.

        Args:
            outputs: ``pred_logits`` ``[K, Q, 2]`` (object, no-object) logits and ``pred_boxes``
                ``[K, Q, 4]`` cxcywh in [0, 1]; other keys are ignored.
            targets: K dicts with ``boxes`` ``[n_k, 4]`` cxcywh in [0, 1], on the outputs' device;
                ``n_k`` may be 0.

        Returns:
            K pairs ``(query_indices, target_indices)``, int64 CPU tensors of length ``min(Q, n_k)``.
        """
        num_pairs, num_queries = outputs["pred_logits"].shape[:2]
        if len(targets) != num_pairs:
            raise ValueError(f"{len(targets)} targets for {num_pairs} predicted pairs")
        # Costs in fp32 whatever the autocast dtype (cdist has no bf16 kernel on CPU).
        prob_object = (
            outputs["pred_logits"].flatten(0, 1).float().softmax(-1)[:, OBJECT : OBJECT + 1]
        )  # [K*Q, 1]
        pred_boxes_cxcywh = outputs["pred_boxes"].flatten(0, 1).float()  # [K*Q, 4]
        tgt_boxes_cxcywh = torch.cat([t["boxes"] for t in targets]).to(pred_boxes_cxcywh)  # [sum n_k, 4]

        cost_class = -prob_object  # broadcast over targets: every target is an object
        cost_bbox = torch.cdist(pred_boxes_cxcywh, tgt_boxes_cxcywh, p=1)
        cost_giou = -generalized_box_iou(cxcywh_to_xyxy(pred_boxes_cxcywh), cxcywh_to_xyxy(tgt_boxes_cxcywh))
        cost = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        sizes = [len(t["boxes"]) for t in targets]
        cost = cost.view(num_pairs, num_queries, sum(sizes)).float().cpu()  # [K, Q, sum n_k]
        # A diverging model can emit NaN boxes; match anyway and let the loss report it.
        cost = torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8)
        indices = [linear_sum_assignment(c[k]) for k, c in enumerate(cost.split(sizes, -1))]
        return [
            (torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in indices
        ]
