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


def test_clip_takes_per_row_sizes():
    boxes = torch.tensor([[[-5.0, 2.0, 50.0, 90.0]], [[10.0, -1.0, 300.0, 20.0]]])  # [2, 1, 4]
    sizes = torch.tensor([[40.0], [200.0]]), torch.tensor([[80.0], [10.0]])
    clipped = box_ops.clip_xyxy(boxes, *sizes)
    assert clipped.tolist() == [[[0.0, 2.0, 40.0, 80.0]], [[10.0, 0.0, 200.0, 10.0]]]
    assert torch.equal(box_ops.clip_xyxy(boxes[0], 40.0, 80.0), clipped[0])


def test_batched_iou_matches_pairwise_iou():
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(3, 5, 2, generator=generator) * 50
    boxes = torch.cat([xy, xy + 1 + torch.rand(3, 5, 2, generator=generator) * 30], dim=-1)
    batched = box_ops.batched_box_iou(boxes, boxes)
    for k in range(3):
        assert torch.allclose(batched[k], box_ops.box_iou(boxes[k], boxes[k]), atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_batched_nms_keeps_what_nms_keeps_in_each_set(seed):
    generator = torch.Generator().manual_seed(seed)
    num_sets, num = 7, 9
    xy = torch.rand(num_sets, num, 2, generator=generator) * 40  # crowded: much overlap
    boxes = torch.cat([xy, xy + 5 + torch.rand(num_sets, num, 2, generator=generator) * 30], dim=-1)
    scores = torch.rand(num_sets, num, generator=generator)
    candidates = torch.rand(num_sets, num, generator=generator) > 0.2
    order = scores.argsort(dim=1, descending=True, stable=True)
    sorted_boxes = boxes.gather(1, order.unsqueeze(-1).expand(-1, -1, 4))
    keep = box_ops.batched_nms_keep(sorted_boxes, candidates.gather(1, order), 0.3)
    for k in range(num_sets):
        chosen = candidates[k].nonzero().squeeze(1)
        expected = chosen[box_ops.nms(boxes[k][chosen], scores[k][chosen], 0.3)]
        assert order[k][keep[k]].tolist() == expected.tolist()
