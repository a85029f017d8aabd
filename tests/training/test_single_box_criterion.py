"""The single-box criterion: its losses by hand, the phrases it leaves out, the confidence's target,
its settings, and which criterion trains which family."""

from __future__ import annotations

import pytest
import torch

from vgtool import box_ops
from vgtool.errors import ConfigError
from vgtool.models.config import NO_OBJECT, OBJECT
from vgtool.models.presets import get_preset
from vgtool.training.config import recipe_from_mapping
from vgtool.training.criteria import criterion_for
from vgtool.training.criterion import SetCriterion
from vgtool.training.single_box_criterion import SingleBoxCriterion, SingleBoxLossConfig


def _outputs(boxes_cxcywh, confidence_logits):
    boxes = torch.tensor(boxes_cxcywh, dtype=torch.float32).reshape(-1, 1, 4).requires_grad_()
    confidence = torch.tensor(confidence_logits, dtype=torch.float32).reshape(-1, 1, 1).requires_grad_()
    logits = torch.cat([confidence, torch.zeros_like(confidence)], dim=-1)  # (object, no-object)
    assert OBJECT == 0 and NO_OBJECT == 1
    return {"pred_logits": logits, "pred_boxes": boxes, "aux_outputs": []}, boxes, confidence


def _targets(*boxes_per_pair):
    return [{"boxes": torch.tensor(b, dtype=torch.float32).reshape(-1, 4)} for b in boxes_per_pair]


BOX = [0.5, 0.5, 0.4, 0.2]
OTHER = [0.3, 0.6, 0.2, 0.2]


@pytest.mark.parametrize(
    ("targets", "used", "ignored"),
    [
        (_targets(BOX, BOX, BOX), 3, 0),
        (_targets(BOX, [], BOX), 2, 1),
        (_targets(BOX, [BOX, OTHER], []), 1, 2),
        (_targets([], [BOX, OTHER], []), 0, 3),
    ],
    ids=["all-single", "one-none", "multi-and-none", "nothing-to-learn"],
)
def test_only_phrases_with_exactly_one_box_are_trained_on(targets, used, ignored):
    outputs, boxes, confidence = _outputs([OTHER, OTHER, OTHER], [0.0, 0.0, 0.0])
    losses = SingleBoxCriterion(SingleBoxLossConfig())(outputs, targets)
    assert losses["ignored"].item() == ignored
    losses["loss"].backward()
    trained = boxes.grad.abs().sum(dim=(1, 2)) > 0
    assert trained.sum().item() == used
    assert all(trained[k] == (len(t["boxes"]) == 1) for k, t in enumerate(targets))
    if used == 0:  # zero, yet every output is in the graph (data-parallel training needs that)
        assert losses["loss"].item() == 0 and boxes.grad is not None and confidence.grad is not None


def test_diou_loss_and_confidence_by_hand():
    outputs, _, _ = _outputs([BOX, OTHER], [2.0, -1.0])
    losses = SingleBoxCriterion(SingleBoxLossConfig())(outputs, _targets(BOX, BOX))
    pred_xyxy = box_ops.cxcywh_to_xyxy(torch.tensor([BOX, OTHER]))
    true_xyxy = box_ops.cxcywh_to_xyxy(torch.tensor([BOX, BOX]))
    diou = box_ops.distance_box_iou(pred_xyxy, true_xyxy).diagonal()
    iou = box_ops.elementwise_iou(pred_xyxy, true_xyxy)
    assert losses["loss_box"].item() == pytest.approx((1 - diou).mean().item(), abs=1e-6)
    assert losses["iou"].item() == pytest.approx(iou.mean().item(), abs=1e-6)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0, -1.0]), iou)
    assert losses["loss_confidence"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert losses["loss"].item() == pytest.approx(losses["loss_box"].item() + expected.item(), abs=1e-6)
    assert iou[0] == pytest.approx(1.0) and 0 < iou[1] < 1


def test_smooth_l1_is_huber_on_the_xyxy_corners():
    outputs, _, _ = _outputs([OTHER], [0.0])
    config = SingleBoxLossConfig(box_loss="smooth_l1", smooth_l1_beta=0.05, confidence_weight=0.0)
    losses = SingleBoxCriterion(config)(outputs, _targets(BOX))
    diff = (box_ops.cxcywh_to_xyxy(torch.tensor(OTHER)) - box_ops.cxcywh_to_xyxy(torch.tensor(BOX))).abs()
    huber = torch.where(diff < 0.05, 0.5 * diff**2 / 0.05, diff - 0.025).sum()
    assert losses["loss_box"].item() == pytest.approx(huber.item(), abs=1e-6)
    assert losses["loss"].item() == pytest.approx(huber.item(), abs=1e-6)


def test_the_confidence_learns_the_iou_without_moving_the_box():
    outputs, boxes, confidence = _outputs([OTHER], [0.0])
    config = SingleBoxLossConfig(box_weight=1e-9, confidence_weight=1.0)
    SingleBoxCriterion(config)(outputs, _targets(BOX))["loss_confidence"].backward()
    assert boxes.grad is None or boxes.grad.abs().max() == 0  # the IoU target is detached
    assert confidence.grad.abs().item() > 0


def test_a_perfect_box_has_no_box_loss():
    outputs, _, _ = _outputs([BOX], [5.0])
    losses = SingleBoxCriterion(SingleBoxLossConfig())(outputs, _targets(BOX))
    assert losses["loss_box"].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"box_loss": "giou"}, "box_loss must be one of diou, smooth_l1"),
        ({"box_weight": 0.0}, "box_weight must be > 0"),
        ({"confidence_weight": -1.0}, "weights must be >= 0"),
        ({"smooth_l1_beta": 0.0}, "smooth_l1_beta must be > 0"),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        SingleBoxLossConfig(**settings)


def test_a_recipe_sets_the_single_box_loss():
    recipe = recipe_from_mapping(
        {"model": {"preset": "textquery-tiny"}, "single_box_loss": {"box_loss": "smooth_l1"}}
    )
    assert recipe.single_box_loss == SingleBoxLossConfig(box_loss="smooth_l1")
    with pytest.raises(ConfigError, match="box_loss"):
        recipe_from_mapping({"single_box_loss": {"box_loss": "l2"}})


@pytest.mark.parametrize(
    ("preset", "criterion"), [("vlgtr-tiny", SetCriterion), ("textquery-tiny", SingleBoxCriterion)]
)
def test_each_family_trains_with_its_criterion(preset, criterion):
    recipe = recipe_from_mapping({"model": {"preset": preset}})
    assert type(criterion_for(recipe, get_preset(preset))) is criterion
