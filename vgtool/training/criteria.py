"""Which criterion trains a model: DETR's set criterion for VL-GTR, the single-box criterion for the
families that answer every phrase with exactly one box (:func:`vgtool.models.build.is_single_box`)."""

from __future__ import annotations

from torch import nn

from vgtool.models.build import is_single_box
from vgtool.models.config import ModelConfig
from vgtool.training.config import RecipeConfig
from vgtool.training.criterion import SetCriterion
from vgtool.training.single_box_criterion import SingleBoxCriterion


def criterion_for(recipe: RecipeConfig, config: ModelConfig) -> nn.Module:
    """The criterion that trains a model of ``config`` with ``recipe``'s loss settings
    (``loss`` for VL-GTR, ``single_box_loss`` for the single-box families).

    Returns:
        A module called as ``criterion(outputs, targets, num_boxes=...)`` that returns a dict of
        scalars with the total under ``loss``.
    """
    if is_single_box(config):
        return SingleBoxCriterion(recipe.single_box_loss)
    return SetCriterion(recipe.loss)
