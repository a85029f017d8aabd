"""The one place a :class:`ModelConfig` becomes a model: its ``architecture`` names the family.

Families are named by import path, so that building one imports only its own module. Adding a
family: its head config and its ``HEAD_SECTIONS`` entry in :mod:`vgtool.models.config`, a module
whose ``build_model(config)`` returns a :class:`~vgtool.models.base.GroundingModel`, and one line in
:data:`MODEL_FAMILIES` (plus one in :data:`vgtool.grounders.registry.FAMILIES` to ground with it).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from vgtool.errors import ConfigError
from vgtool.models.config import ModelConfig


@dataclass(frozen=True)
class ModelFamily:
    """A trainable model family.

    Attributes:
        builder: ``"module:function"`` that builds the model from a :class:`ModelConfig`.
        single_box: the model answers every phrase with exactly one box (``pred_boxes [K, 1, 4]``),
            whose object probability is a confidence and never means "not there"; it trains with
            :class:`~vgtool.training.single_box_criterion.SingleBoxCriterion`, and its uncalibrated
            default score threshold keeps that box.
    """

    builder: str
    single_box: bool = False


MODEL_FAMILIES: dict[str, ModelFamily] = {
    "vlgtr": ModelFamily("vgtool.models.vlgtr:build_model"),
    "textquery": ModelFamily("vgtool.models.textquery:build_model", single_box=True),
    "fusion": ModelFamily("vgtool.models.fusion:build_model", single_box=True),
}


def model_family(architecture: str) -> ModelFamily:
    """The family registered for ``architecture``.

    Raises:
        ConfigError: for an architecture no family is registered for, listing the known ones.
    """
    try:
        return MODEL_FAMILIES[architecture]
    except KeyError:
        known = ", ".join(sorted(MODEL_FAMILIES))
        raise ConfigError(
            f"no model family is registered for architecture {architecture!r} (known: {known})"
        ) from None


def is_single_box(config: ModelConfig) -> bool:
    """Whether ``config``'s model answers every phrase with exactly one box."""
    return model_family(config.architecture).single_box


def build_model(config: ModelConfig):
    """Build the model ``config.architecture`` names, loading pretrained parts as the config asks.

    Returns:
        A :class:`~vgtool.models.base.GroundingModel`, in training mode.
    """
    module, name = model_family(config.architecture).builder.split(":")
    return getattr(importlib.import_module(module), name)(config)
