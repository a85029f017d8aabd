"""Outputs of a grounding run: the journal, COCO annotations, crops, overlays, the run manifest."""
