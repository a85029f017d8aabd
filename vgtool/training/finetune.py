"""Fine-tuning defaults: start from a checkpoint, train the new parts gently on new data.

This is how annotators' corrections come back: export the corrected boxes as COCO (with a
``phrase`` per annotation, or category names as phrases) and fine-tune on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vgtool.config import to_dict
from vgtool.datasets.registry import DataConfig
from vgtool.training.config import RecipeConfig, recipe_from_mapping


def finetune_recipe(
    *,
    model: str | Path,
    train: DataConfig,
    val: DataConfig | None = None,
    epochs: int = 5,
    lr: float = 5e-5,
    batch_size: int = 8,
    overrides: Sequence[str] = (),
) -> RecipeConfig:
    """A one-stage recipe that starts from ``model`` with both backbones frozen.

    Defaults: AdamW at ``lr`` for the new parts with a short warm-up and cosine decay, horizontal
    flips (with left/right words swapped), no crops. Any field can be changed with ``overrides``
    (e.g. ``stages.0.vision_lr=1e-5`` is not addressable; use a recipe file for multi-stage runs).
    """
    mapping = {
        "init_from": str(model),
        "data": {"train": to_dict(train), "val": to_dict(val) if val is not None else None},
        "augment": {"hflip": 0.5, "random_resized_crop": 0.0},
        "stages": [{"name": "finetune", "epochs": epochs, "lr": lr, "warmup_steps": 20}],
        "batch_size": batch_size,
    }
    return recipe_from_mapping(mapping, overrides)
