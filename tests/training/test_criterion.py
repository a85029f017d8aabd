from __future__ import annotations

import math

import pytest
import torch

from vgtool.errors import ConfigError
from vgtool.models.vlgtr import NO_OBJECT, OBJECT
from vgtool.training.criterion import LossConfig, SetCriterion

TARGET_CXCYWH = torch.tensor([[0.6, 0.5, 0.2, 0.2]])
SHIFTED_CXCYWH = torch.tensor([[0.5, 0.5, 0.2, 0.2]])  # 0.1 to the left: IoU 1/3, GIoU 1/3


def two_query_outputs(first_box_cxcywh: torch.Tensor) -> dict[str, torch.Tensor]:
    """One pair, two queries: query 0 at ``first_box_cxcywh`` with logits (0, 0), query 1 far away with
    logits (log 3, 0) for (object, no-object)."""
    logits = torch.zeros(1, 2, 2)
    logits[0, 1, OBJECT] = math.log(3.0)
    boxes = torch.cat([first_box_cxcywh, torch.tensor([[0.1, 0.1, 0.05, 0.05]])]).unsqueeze(0)
    return {"pred_logits": logits.requires_grad_(), "pred_boxes": boxes.requires_grad_()}


def random_outputs(num_pairs: int, num_queries: int, num_aux: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)

    def layer() -> dict[str, torch.Tensor]:
        return {
            "pred_logits": torch.randn(num_pairs, num_queries, 2, generator=generator).requires_grad_(),
            "pred_boxes": torch.rand(num_pairs, num_queries, 4, generator=generator).requires_grad_(),
        }

    return layer() | {"aux_outputs": [layer() for _ in range(num_aux)]}


def test_perfect_predictions_give_zero_box_losses() -> None:
    targets = [
        {"boxes": torch.tensor([[0.3, 0.3, 0.2, 0.1], [0.7, 0.6, 0.1, 0.3]])},
        {"boxes": TARGET_CXCYWH},
    ]
    outputs = random_outputs(2, 4, num_aux=0)
    with torch.no_grad():
        outputs["pred_boxes"][0, [3, 1]] = targets[0]["boxes"]
        outputs["pred_boxes"][1, 2] = targets[1]["boxes"][0]

    losses = SetCriterion(LossConfig())(outputs, targets)

    assert losses["loss_bbox"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("no_object_weight", "expected_ce"),
    [
        # weighted mean: (1 * -log(1/2) + w * -log(1/4)) / (1 + w)
        (0.1, (math.log(2) + 0.1 * math.log(4)) / 1.1),
        (1.0, (math.log(2) + math.log(4)) / 2),
    ],
)
def test_no_object_weight_in_cross_entropy(no_object_weight: float, expected_ce: float) -> None:
    outputs = two_query_outputs(TARGET_CXCYWH)
    config = LossConfig(no_object_weight=no_object_weight, aux_loss=False)
    losses = SetCriterion(config)(outputs, [{"boxes": TARGET_CXCYWH}])
    assert losses["loss_ce"].item() == pytest.approx(expected_ce, rel=1e-6)


@pytest.mark.parametrize(
    ("box_iou_loss", "expected"),
    [
        ("giou", 1 - 1 / 3),
        # DIoU = IoU - centre distance^2 / enclosing diagonal^2 = 1/3 - 0.1^2 / (0.3^2 + 0.2^2)
        ("diou", 1 - (1 / 3 - 0.01 / 0.13)),
    ],
)
def test_iou_loss_kinds(box_iou_loss: str, expected: float) -> None:
    outputs = two_query_outputs(SHIFTED_CXCYWH)
    losses = SetCriterion(LossConfig(box_iou_loss=box_iou_loss))(outputs, [{"boxes": TARGET_CXCYWH}])
    assert losses["loss_giou"].item() == pytest.approx(expected, rel=1e-5)
    assert losses["loss_bbox"].item() == pytest.approx(0.1, rel=1e-5)


def test_all_empty_targets_give_finite_differentiable_loss() -> None:
    outputs = random_outputs(3, 5, num_aux=1)
    losses = SetCriterion(LossConfig())(outputs, [{"boxes": torch.zeros(0, 4)} for _ in range(3)])

    assert losses["loss_bbox"].item() == losses["loss_giou"].item() == 0.0
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert outputs["pred_logits"].grad.abs().sum() > 0
    assert outputs["aux_outputs"][0]["pred_logits"].grad.abs().sum() > 0


@pytest.mark.parametrize(("aux_loss", "num_aux"), [(True, 2), (False, 2), (True, 0)])
def test_aux_losses_and_weighted_total(aux_loss: bool, num_aux: int) -> None:
    config = LossConfig(aux_loss=aux_loss, class_weight=1.5, bbox_weight=3.0, giou_weight=0.5)
    targets = [{"boxes": TARGET_CXCYWH}, {"boxes": torch.zeros(0, 4)}]

    losses = SetCriterion(config)(random_outputs(2, 3, num_aux), targets)

    suffixes = [""] + ([f"_{i}" for i in range(num_aux)] if aux_loss else [])
    names = ("loss_ce", "loss_bbox", "loss_giou")
    assert set(losses) == {f"{name}{s}" for name in names for s in suffixes} | {"loss"}
    weights = {"loss_ce": 1.5, "loss_bbox": 3.0, "loss_giou": 0.5}
    expected = sum(weights[name] * losses[f"{name}{s}"] for name in names for s in suffixes)
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_num_boxes_override_divides_box_losses() -> None:
    outputs = two_query_outputs(SHIFTED_CXCYWH)
    criterion = SetCriterion(LossConfig())
    local = criterion(outputs, [{"boxes": TARGET_CXCYWH}])
    overridden = criterion(outputs, [{"boxes": TARGET_CXCYWH}], num_boxes=4)
    assert overridden["loss_bbox"].item() == pytest.approx(local["loss_bbox"].item() / 4)
    assert overridden["loss_giou"].item() == pytest.approx(local["loss_giou"].item() / 4)
    assert overridden["loss_ce"].item() == pytest.approx(local["loss_ce"].item())


def test_unmatched_queries_learn_no_object() -> None:
    outputs = two_query_outputs(TARGET_CXCYWH)
    SetCriterion(LossConfig(aux_loss=False))(outputs, [{"boxes": TARGET_CXCYWH}])["loss_ce"].backward()
    grad = outputs["pred_logits"].grad[0]
    assert grad[0, OBJECT] < 0 < grad[0, NO_OBJECT]  # matched query: push towards object
    assert grad[1, NO_OBJECT] < 0 < grad[1, OBJECT]  # unmatched query: push towards no-object


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"box_iou_loss": "ciou"}, "box_iou_loss must be one of"),
        ({"no_object_weight": 0.0}, "no_object_weight must be > 0"),
        ({"bbox_weight": -1.0}, "bbox_weight"),
        ({"match_class": 0.0, "match_bbox": 0.0, "match_giou": 0.0}, "cannot all be 0"),
    ],
)
def test_bad_config(overrides: dict, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        LossConfig(**overrides)
