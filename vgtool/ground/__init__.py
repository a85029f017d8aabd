"""Batch grounding: phrases and images in, COCO annotations, crops and overlays out."""
