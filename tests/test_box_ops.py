from __future__ import annotations

import pytest
import torch

from vgtool import box_ops


def test_round_trips():
    torch.manual_seed(0)
    top_left = torch.rand(50, 2)
    boxes_xyxy = torch.cat([top_left, top_left + torch.rand(50, 2)], dim=1)
    assert torch.allclose(box_ops.cxcywh_to_xyxy(box_ops.xyxy_to_cxcywh(boxes_xyxy)), boxes_xyxy, atol=1e-6)
    assert torch.allclose(box_ops.xywh_to_xyxy(box_ops.xyxy_to_xywh(boxes_xyxy)), boxes_xyxy, atol=1e-6)
    scaled = box_ops.scale_normalized(boxes_xyxy, 640, 480)
    assert scaled[:, [0, 2]].max() > 1 and torch.allclose(scaled[:, 1], boxes_xyxy[:, 1] * 480)
    assert torch.allclose(box_ops.normalize_pixels(scaled, 640, 480), boxes_xyxy, atol=1e-6)
    cxcywh = box_ops.xyxy_to_cxcywh(boxes_xyxy)
    flipped = box_ops.hflip_cxcywh(cxcywh)
    assert torch.allclose(flipped[:, 0], 1 - cxcywh[:, 0]) and torch.allclose(flipped[:, 1:], cxcywh[:, 1:])
    assert torch.allclose(box_ops.hflip_cxcywh(flipped), cxcywh, atol=1e-6)


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [5, 0, 15, 10], 1 / 3),
        ([0, 0, 10, 10], [10, 10, 20, 20], 0.0),
        ([0, 0, 10, 10], [2, 2, 4, 4], 0.04),
    ],
)
def test_iou_cases(a, b, iou):
    a_t, b_t = torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32)
    assert box_ops.box_iou(a_t, b_t).item() == pytest.approx(iou)
    assert box_ops.elementwise_iou(a_t, b_t).item() == pytest.approx(iou)


def test_nms_keeps_best_and_disjoint():
    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 9, 10]], dtype=torch.float32
    )
    scores = torch.tensor([0.9, 0.95, 0.5, 0.1])
    keep = box_ops.nms(boxes, scores, 0.5)
    assert keep.tolist() == [1, 2]
    assert box_ops.nms(boxes[:0], scores[:0], 0.5).numel() == 0


def test_clip():
    clipped = box_ops.clip_xyxy(torch.tensor([[-5.0, -1.0, 120.0, 50.0]]), 100, 40)
    assert clipped.tolist() == [[0.0, 0.0, 100.0, 40.0]]


def test_hflip_and_translate_xyxy_round_trips():
    torch.manual_seed(0)
    top_left = torch.rand(50, 2) * 100
    boxes_xyxy = torch.cat([top_left, top_left + torch.rand(50, 2) * 50], dim=1)
    flipped = box_ops.hflip_xyxy(boxes_xyxy, 160)
    assert (flipped[:, 2] >= flipped[:, 0]).all() and torch.equal(flipped[:, [1, 3]], boxes_xyxy[:, [1, 3]])
    assert torch.allclose(box_ops.hflip_xyxy(flipped, 160), boxes_xyxy, atol=1e-4)
    assert box_ops.hflip_xyxy(torch.tensor([[10.0, 2.0, 30.0, 5.0]]), 100).tolist() == [
        [70.0, 2.0, 90.0, 5.0]
    ]
    shifted = box_ops.translate_xyxy(boxes_xyxy, -12.0, 7.5)
    assert torch.allclose(box_ops.translate_xyxy(shifted, 12.0, -7.5), boxes_xyxy, atol=1e-5)
    assert box_ops.box_area(shifted).allclose(box_ops.box_area(boxes_xyxy), atol=1e-3)
