"""The training loss of the single-box families (:func:`vgtool.models.build.is_single_box`).

Such a model answers every phrase with exactly one box and a confidence. There is nothing to match:
the box regresses the phrase's one true box, and the confidence learns to predict how well it did
(the IoU of the predicted box with the true one, as a soft target of a binary cross-entropy; the
target is detached, so the box is not pulled towards what is easy to score). Phrases with no true
box or with several cannot be answered with one box: they are left out of the loss and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vgtool import box_ops
from vgtool.errors import ConfigError
from vgtool.models.config import OBJECT

BOX_LOSSES = ("diou", "smooth_l1")


@dataclass(frozen=True)
class SingleBoxLossConfig:
    """Loss of the single-box families.

    Attributes:
        box_loss: ``diou`` (``1 - DIoU``, distance-IoU: the text-as-query seed's) or ``smooth_l1``
            (Huber on the normalised xyxy corners, summed over the four: the fusion seed's).
        box_weight: weight of ``loss_box`` in the total.
        confidence_weight: weight of ``loss_confidence`` (binary cross-entropy of the object
            probability against the detached IoU of the predicted box with the true one).
        smooth_l1_beta: where Huber turns from quadratic to linear, in normalised image units
            (torch's default, 1.0, makes it quadratic over the whole [0, 1] range).
    """

    box_loss: Literal["diou", "smooth_l1"] = "diou"
    box_weight: float = 1.0
    confidence_weight: float = 1.0
    smooth_l1_beta: float = 1.0

    def __post_init__(self) -> None:
        if self.box_loss not in BOX_LOSSES:
            raise ConfigError(
                f"single_box_loss.box_loss must be one of {', '.join(BOX_LOSSES)}, not {self.box_loss!r}"
            )
        if self.box_weight < 0 or self.confidence_weight < 0:
            raise ConfigError("single_box_loss weights must be >= 0")
        if self.box_weight == 0:
            raise ConfigError("single_box_loss.box_weight must be > 0")
        if self.smooth_l1_beta <= 0:
            raise ConfigError(f"single_box_loss.smooth_l1_beta must be > 0, not {self.smooth_l1_beta}")


class SingleBoxCriterion(nn.Module):
    """Box and confidence losses of a one-box-per-phrase model (see the module docstring)."""

    def __init__(self, config: SingleBoxLossConfig):
        super().__init__()
        self.config = config

    def forward(
        self,
        outputs: dict[str, torch.Tensor | list[dict[str, torch.Tensor]]],
        targets: list[dict[str, torch.Tensor]],
        num_boxes: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute the losses and their weighted total.

        Args:
            outputs: the model's output dict: ``pred_logits`` ``[K, 1, 2]`` (object, no-object) and
                ``pred_boxes`` ``[K, 1, 4]`` cxcywh in [0, 1].
            targets: K dicts with ``boxes`` ``[n_k, 4]`` cxcywh in [0, 1]; only pairs with
                ``n_k == 1`` are trained on.
            num_boxes: unused (the losses are means over the pairs trained on); accepted so that
                the training loop calls every criterion alike.

        Returns:
            ``loss_box`` and ``loss_confidence`` (means over the pairs trained on, 0 when there are
            none), ``loss`` (their weighted sum), ``iou`` (mean IoU of the predicted boxes with the
            true ones) and ``ignored`` (pairs left out: no true box, or several).
        """
        logits = outputs["pred_logits"].float()[:, 0]  # [K, 2]
        boxes_cxcywh = outputs["pred_boxes"].float()[:, 0]  # [K, 4] in [0, 1]
        if logits.shape[0] != len(targets):
            raise ValueError(f"{logits.shape[0]} predictions for {len(targets)} targets")
        used = [k for k, t in enumerate(targets) if len(t["boxes"]) == 1]
        ignored = logits.new_tensor(float(len(targets) - len(used)))
        if not used:  # zero losses that still reach every output, so each parameter gets a gradient
            zero = (logits.sum() + boxes_cxcywh.sum()) * 0.0
            return {
                "loss_box": zero,
                "loss_confidence": zero,
                "loss": zero,
                "iou": zero.detach(),
                "ignored": ignored,
            }
        index = torch.tensor(used, device=logits.device)
        pred_xyxy = box_ops.cxcywh_to_xyxy(boxes_cxcywh.index_select(0, index))  # [M, 4]
        true_xyxy = box_ops.cxcywh_to_xyxy(torch.cat([targets[k]["boxes"] for k in used]).to(pred_xyxy))
        if self.config.box_loss == "diou":
            loss_box = (1 - box_ops.distance_box_iou(pred_xyxy, true_xyxy).diagonal()).mean()
        else:
            per_corner = F.smooth_l1_loss(
                pred_xyxy, true_xyxy, reduction="none", beta=self.config.smooth_l1_beta
            )
            loss_box = per_corner.sum(-1).mean()
        iou = box_ops.elementwise_iou(pred_xyxy, true_xyxy).detach()  # [M], the confidence's target
        object_logit = logits.index_select(0, index)
        object_logit = object_logit[:, OBJECT] - object_logit[:, 1 - OBJECT]  # log-odds of "object"
        loss_confidence = F.binary_cross_entropy_with_logits(object_logit, iou)
        loss = self.config.box_weight * loss_box + self.config.confidence_weight * loss_confidence
        return {
            "loss_box": loss_box,
            "loss_confidence": loss_confidence,
            "loss": loss,
            "iou": iou.mean(),
            "ignored": ignored,
        }
