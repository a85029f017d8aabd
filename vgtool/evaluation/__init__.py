"""Evaluation: grounding accuracy, no-object false positives and COCO mAP from predictions."""
