"""PostProcess handles all pairs at once; it must keep what a per-pair loop keeps."""

from __future__ import annotations

import pytest
import torch

from vgtool import box_ops
from vgtool.models.config import OBJECT
from vgtool.models.postprocess import PostProcess, PostProcessConfig


def _per_pair(outputs, sizes_wh, config):
    scores = outputs["pred_logits"].softmax(-1)[..., OBJECT]
    boxes = box_ops.cxcywh_to_xyxy(outputs["pred_boxes"])
    results = []
    for pair_boxes, pair_scores, (width, height) in zip(boxes, scores, sizes_wh.tolist(), strict=True):
        pair_boxes = box_ops.clip_xyxy(box_ops.scale_normalized(pair_boxes, width, height), width, height)
        keep = (pair_scores >= config.threshold) & (pair_boxes[:, 2] > pair_boxes[:, 0])
        keep &= pair_boxes[:, 3] > pair_boxes[:, 1]
        pair_boxes, pair_scores = pair_boxes[keep], pair_scores[keep]
        order = (
            box_ops.nms(pair_boxes, pair_scores, config.nms_iou)
            if config.nms_iou < 1
            else (pair_scores.argsort(descending=True, stable=True))
        )
        order = order[: config.top_k] if config.top_k else order
        results.append((pair_boxes[order], pair_scores[order]))
    return results


@pytest.mark.parametrize(
    "config",
    [
        PostProcessConfig(),
        PostProcessConfig(0.2, 2, 0.5),
        PostProcessConfig(0.0, 0, 1.0),
        PostProcessConfig(0.99),
    ],
)
def test_batched_postprocess_equals_a_per_pair_loop(config):
    generator = torch.Generator().manual_seed(1)
    num_pairs, queries = 12, 10
    centres = torch.rand(num_pairs, queries, 2, generator=generator) * 1.2 - 0.1  # some off the image
    sizes = torch.rand(num_pairs, queries, 2, generator=generator) * 0.4
    sizes[0, :3] = 0.0  # empty boxes are dropped
    outputs = {
        "pred_logits": torch.randn(num_pairs, queries, 2, generator=generator) * 2,
        "pred_boxes": torch.cat([centres, sizes], dim=-1),
    }
    sizes_wh = torch.tensor([[640.0, 480.0], [33.0, 200.0]]).repeat(num_pairs // 2, 1)
    got = PostProcess(config)(outputs, sizes_wh)
    want = _per_pair(outputs, sizes_wh, config)
    assert len(got) == num_pairs and any(len(s) for _, s in got)
    for (boxes, scores), (want_boxes, want_scores) in zip(got, want, strict=True):
        assert torch.allclose(boxes, want_boxes) and torch.allclose(scores, want_scores)


@pytest.mark.parametrize("top_k", [1, 3, 10, 40])
def test_nms_with_a_top_k_keeps_what_nms_over_every_box_keeps(top_k):
    """With a top-k, NMS looks at each pair's best boxes first and further only where needed;
    pairs whose best boxes all overlap (kept: one) must look further, and tied scores must keep
    the same order."""
    generator = torch.Generator().manual_seed(2)
    num_pairs, queries = 9, 400
    centres = torch.rand(num_pairs, queries, 2, generator=generator)
    sizes = torch.rand(num_pairs, queries, 2, generator=generator) * 0.3 + 0.05
    centres[:3, :200] = 0.5  # three pairs: their 200 best boxes are near-copies of one box
    sizes[:3, :200] = 0.4
    logits = torch.randn(num_pairs, queries, 2, generator=generator)
    logits[:3, :200, OBJECT] = 5.0 + torch.rand(3, 200, generator=generator)
    logits[3, :, :] = 0.0  # one pair: every score tied
    outputs = {"pred_logits": logits, "pred_boxes": torch.cat([centres, sizes], dim=-1)}
    sizes_wh = torch.tensor([[640.0, 480.0]]).repeat(num_pairs, 1)
    config = PostProcessConfig(threshold=0.05, top_k=top_k, nms_iou=0.5)
    got = PostProcess(config)(outputs, sizes_wh)
    want = [
        (boxes[:top_k], scores[:top_k])
        for boxes, scores in PostProcess(PostProcessConfig(0.05, 0, 0.5))(outputs, sizes_wh)
    ]
    assert [len(s) for _, s in got] == [len(s) for _, s in want]
    assert sum(len(s) for _, s in got) > top_k * 3
    for (boxes, scores), (want_boxes, want_scores) in zip(got, want, strict=True):
        assert torch.equal(boxes, want_boxes) and torch.equal(scores, want_scores)
