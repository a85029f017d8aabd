"""Validation during training: top-1 grounding accuracy and the no-object false-positive rate."""

from __future__ import annotations

import numpy as np
import torch

from vgtool import box_ops
from vgtool.data.preprocess import PreprocessConfig, normalize
from vgtool.device import autocast
from vgtool.evaluation.metrics import grounding_accuracy, no_object_false_positive_rate, top1_ious
from vgtool.models.config import OBJECT


@torch.inference_mode()
def validate(
    model, loader, preprocess: PreprocessConfig, device: torch.device, bf16: bool, threshold: float = 0.5
):
    """Score ``model`` on a loader of :class:`TrainBatch` (normalised boxes, so IoU is scale-free).

    Returns:
        ``acc@0.5``, ``acc@0.75``, ``miou``, ``no_object_fp_rate`` and counts.
    """
    was_training = model.training
    model.eval()
    pred_boxes, pred_scores, gt_boxes, empty_scores = [], [], [], []
    for batch in loader:
        batch = batch.to(device)
        with autocast(device, bf16):
            outputs = model(
                normalize(batch.pixels, preprocess),
                batch.input_ids,
                batch.attention_mask,
                image_index=batch.image_index,
            )
        scores = outputs["pred_logits"].float().softmax(-1)[..., OBJECT].cpu().numpy()  # [B, Q]
        boxes_xyxy = (
            box_ops.cxcywh_to_xyxy(outputs["pred_boxes"].float()).cpu().numpy()
        )  # [B, Q, 4] in [0, 1]
        for i, target in enumerate(batch.targets):
            target_xyxy = box_ops.cxcywh_to_xyxy(target["boxes"]).cpu().numpy()
            if len(target_xyxy):
                pred_boxes.append(boxes_xyxy[i])
                pred_scores.append(scores[i])
                gt_boxes.append(target_xyxy)
            else:
                empty_scores.append(scores[i])
    model.train(was_training)
    result = {"n_val": len(gt_boxes) + len(empty_scores)}
    if gt_boxes:
        result.update(grounding_accuracy(top1_ious(pred_boxes, pred_scores, gt_boxes)))
    if empty_scores:
        fp = no_object_false_positive_rate(empty_scores, threshold)
        result["no_object_fp_rate"] = fp["fp_rate"]
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in result.items()}
