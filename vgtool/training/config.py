"""Typed training configuration and recipe loading (YAML in ``train/`` + ``--set`` overrides)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vgtool.config import apply_overrides, from_dict, load_mapping, to_dict
from vgtool.datasets.registry import DataConfig
from vgtool.errors import ConfigError
from vgtool.models.config import ModelConfig
from vgtool.models.presets import get_preset
from vgtool.training.augment import AugmentConfig
from vgtool.training.criterion import LossConfig
from vgtool.training.single_box_criterion import SingleBoxLossConfig


@dataclass(frozen=True)
class StageConfig:
    """One stage of the schedule. The seed recipe has two: frozen backbones, then the vision
    backbone unfrozen at a low learning rate.

    Attributes:
        epochs: passes over the training data in this stage.
        lr: learning rate of the new parts (projections, queries, decoder, heads).
        vision_lr: learning rate of the vision backbone; 0 keeps it frozen in this stage.
        text_lr: learning rate of the text encoder; 0 keeps it frozen in this stage.
        warmup_steps: linear warm-up from 0, then cosine decay to ``min_lr_ratio * lr``.
    """

    name: str = "stage"
    epochs: int = 1
    lr: float = 1e-4
    vision_lr: float = 0.0
    text_lr: float = 0.0
    warmup_steps: int = 0
    min_lr_ratio: float = 0.01


@dataclass(frozen=True)
class TrainDataConfig:
    """Training and validation data (any format :func:`vgtool.datasets.load_samples` reads)."""

    train: DataConfig = field(default_factory=DataConfig)
    val: DataConfig | None = None
    max_val_samples: int = 2000


@dataclass(frozen=True)
class RecipeConfig:
    """A whole training run.

    Attributes:
        model: the architecture (from ``model.preset`` plus overrides in the recipe file).
        init_from: start from this checkpoint's weights (fine-tuning) instead of a fresh model.
        loss: the loss of VL-GTR (set prediction).
        single_box_loss: the loss of the single-box families (``textquery``, ``fusion``).
        optimizer: AdamW (the seed's), or plain SGD (useful to compare runs step by step).
        batch_size: samples per process and step (the global batch is this times the process count).
        amp: ``bf16`` autocast, or ``none``; ``auto`` means bf16 on CUDA and none on CPU. On a CPU
            with AMX, a step of the bundled recipe is about 1.4x faster in bf16 than in fp32;
            without native bf16 instructions it is emulated and slower (training warns).
        cache_features: train from cached vision features while the backbone is frozen and the
            augmentation at most flips the image (no crop, no colour jitter): each image (and its
            mirror image, when flipped) is encoded once and not decoded again once cached. Much
            faster; see ``feature_cache.py``.
        cache_features_on_disk: keep those features (fp16) in ``<out>/feature_cache/`` instead of
            in memory: for datasets too large for RAM, and a resumed run reuses them.
        group_by_image: shuffle images rather than samples, so each image's phrases are next to
            each other in the epoch, share a batch and go through the backbone once (when the
            augmentation at most flips the image; crops and jitter make every sample's input new).
        cache_text: while the text encoder is frozen, encode each distinct phrase once and reuse it.
        save_every_epochs: write ``last/`` every this many epochs (and always at the end of a stage).
        save_every_steps: also write ``last/`` every this many steps (0: only at epoch ends).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    init_from: str | None = None
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    single_box_loss: SingleBoxLossConfig = field(default_factory=SingleBoxLossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    stages: tuple[StageConfig, ...] = (StageConfig(),)
    batch_size: int = 16
    num_workers: int = 0
    seed: int = 0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    amp: Literal["auto", "bf16", "none"] = "auto"
    device: str = "auto"
    cache_features: bool = False
    cache_features_on_disk: bool = False
    group_by_image: bool = False
    cache_text: bool = True
    eval_every_epochs: int = 1
    save_every_epochs: int = 1
    save_every_steps: int = 0
    log_every_steps: int = 10


def _model_section(section: dict[str, Any]) -> dict[str, Any]:
    """``model: {preset: NAME, ...overrides}`` -> a full ModelConfig dict."""
    section = dict(section)
    preset = section.pop("preset", None)
    base = to_dict(get_preset(preset)) if preset else to_dict(ModelConfig())

    def merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        for key, value in extra.items():
            if (
                isinstance(value, dict)
                and isinstance(into.get(key), dict)
                and key not in ("kwargs", "overrides")
            ):
                merge(into[key], value)
            else:
                into[key] = value
        return into

    return merge(base, section)


def recipe_from_mapping(data: dict[str, Any], overrides: Sequence[str] = ()) -> RecipeConfig:
    """Build a :class:`RecipeConfig` from a recipe mapping plus ``key.path=value`` overrides."""
    data = apply_overrides(data, overrides)
    if "model" in data:
        if not isinstance(data["model"], dict):
            raise ConfigError("model: expected a mapping (with an optional 'preset' key)")
        data["model"] = _model_section(data["model"])
    recipe = from_dict(RecipeConfig, data)
    if not recipe.stages:
        raise ConfigError("stages: at least one stage is needed")
    if recipe.batch_size < 1:
        raise ConfigError("batch_size must be at least 1")
    return recipe


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> RecipeConfig:
    """Read a recipe file (YAML or JSON) and apply ``--set`` overrides."""
    return recipe_from_mapping(load_mapping(path), overrides)
