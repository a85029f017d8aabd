from __future__ import annotations

import pytest
import torch

from vgtool.models.vlgtr import NO_OBJECT, OBJECT
from vgtool.training.matcher import HungarianMatcher


def random_boxes_cxcywh(n: int, generator: torch.Generator) -> torch.Tensor:
    centre = torch.rand(n, 2, generator=generator) * 0.6 + 0.2
    size = torch.rand(n, 2, generator=generator) * 0.3 + 0.05
    return torch.cat([centre, size], dim=-1)


def random_outputs(num_pairs: int, num_queries: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "pred_logits": torch.randn(num_pairs, num_queries, 2, generator=generator),
        "pred_boxes": random_boxes_cxcywh(num_pairs * num_queries, generator).view(num_pairs, num_queries, 4),
    }


@pytest.mark.parametrize("seed", range(5))
def test_batched_matching_equals_per_sample_matching(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    sizes = [0, 1, 3, 0, 7, 2]  # 7 > Q: only Q targets can be matched
    outputs = random_outputs(len(sizes), 5, generator)
    targets = [{"boxes": random_boxes_cxcywh(n, generator)} for n in sizes]
    matcher = HungarianMatcher()

    batched = matcher(outputs, targets)

    assert len(batched) == len(sizes)
    for k, (query_idx, target_idx) in enumerate(batched):
        alone = matcher({key: value[k : k + 1] for key, value in outputs.items()}, targets[k : k + 1])[0]
        assert torch.equal(query_idx, alone[0])
        assert torch.equal(target_idx, alone[1])
        assert query_idx.dtype == target_idx.dtype == torch.int64
        assert len(query_idx) == min(5, sizes[k])
        assert len(set(query_idx.tolist())) == len(query_idx)


def test_all_empty_targets_give_empty_indices() -> None:
    outputs = random_outputs(3, 4, torch.Generator().manual_seed(0))
    indices = HungarianMatcher()(outputs, [{"boxes": torch.zeros(0, 4)} for _ in range(3)])
    assert [(len(i), len(j)) for i, j in indices] == [(0, 0)] * 3
    assert all(i.dtype == j.dtype == torch.int64 for i, j in indices)


def test_obvious_assignment() -> None:
    # Query 0 sits on target 1, query 2 on target 0; query 1 is far from both.
    boxes = torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.9, 0.9, 0.05, 0.05], [0.7, 0.6, 0.2, 0.3]]])
    logits = torch.zeros(1, 3, 2)
    logits[..., OBJECT] = torch.tensor([2.0, 5.0, 2.0])  # the far query is the most confident
    logits[..., NO_OBJECT] = 0.0
    targets = [{"boxes": torch.tensor([[0.7, 0.6, 0.2, 0.3], [0.2, 0.2, 0.1, 0.1]])}]

    ((query_idx, target_idx),) = HungarianMatcher()({"pred_logits": logits, "pred_boxes": boxes}, targets)

    assert dict(zip(query_idx.tolist(), target_idx.tolist(), strict=True)) == {0: 1, 2: 0}


def test_class_cost_alone_picks_most_confident_queries() -> None:
    logits = torch.tensor([[[0.0, 1.0], [3.0, 0.0], [1.0, 0.0], [2.0, 0.0]]])
    outputs = {"pred_logits": logits, "pred_boxes": torch.full((1, 4, 4), 0.5)}
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]])}]

    ((query_idx, _),) = HungarianMatcher(cost_class=1.0, cost_bbox=0.0, cost_giou=0.0)(outputs, targets)

    assert sorted(query_idx.tolist()) == [1, 3]


@pytest.mark.parametrize(
    ("costs", "num_targets", "error"),
    [
        ((0.0, 0.0, 0.0), 1, "all matcher costs are 0"),
        ((1.0, 5.0, 2.0), 2, "2 targets for 1 predicted pairs"),
    ],
)
def test_bad_inputs(costs: tuple[float, float, float], num_targets: int, error: str) -> None:
    outputs = random_outputs(1, 3, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=error):
        HungarianMatcher(*costs)(outputs, [{"boxes": torch.zeros(0, 4)}] * num_targets)


def test_bf16_outputs_are_matched_like_fp32() -> None:
    """Under bf16 autocast the outputs are bf16; matching must work (on CPU too) and agree."""
    generator = torch.Generator().manual_seed(3)
    sizes = [1, 3, 0, 2]
    outputs = random_outputs(len(sizes), 6, generator)
    targets = [{"boxes": random_boxes_cxcywh(n, generator)} for n in sizes]
    low = {key: value.bfloat16() for key, value in outputs.items()}
    expected = HungarianMatcher()({key: value.float() for key, value in low.items()}, targets)
    for (qi, ti), (qe, te) in zip(HungarianMatcher()(low, targets), expected, strict=True):
        assert torch.equal(qi, qe) and torch.equal(ti, te)
