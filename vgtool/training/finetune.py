"""Fine-tuning: start from a checkpoint, train the new parts gently on new data, and give the result
a default score threshold.

This is how annotators' corrections come back: export the corrected boxes as COCO (with a
``phrase`` per annotation, or category names as phrases) and fine-tune on them.

The source model's calibrated threshold (``meta.postprocess``, see
:mod:`vgtool.evaluation.calibrate`) is kept in the fine-tuned ``best/`` checkpoint, so ``vgtool
ground`` keeps using it; ``recalibrate`` chooses a new one on the validation data instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from vgtool.checkpoint import model_postprocess, set_model_postprocess
from vgtool.config import to_dict
from vgtool.datasets.registry import DataConfig
from vgtool.errors import InputError
from vgtool.training.config import RecipeConfig, recipe_from_mapping

ThresholdAction = Literal["kept", "recalibrated", "none"]


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
    (e.g. ``stages.0.vision_lr=1e-5``).
    """
    mapping = {
        "init_from": str(model),
        "data": {"train": to_dict(train), "val": to_dict(val) if val is not None else None},
        "augment": {"hflip": 0.5, "random_resized_crop": 0.0},
        "stages": [{"name": "finetune", "epochs": epochs, "lr": lr, "warmup_steps": 20}],
        "batch_size": batch_size,
    }
    return recipe_from_mapping(mapping, overrides)


def finetune(
    *,
    model: str | Path,
    train: DataConfig,
    out_dir: str | Path,
    val: DataConfig | None = None,
    epochs: int = 5,
    lr: float = 5e-5,
    batch_size: int = 8,
    overrides: Sequence[str] = (),
    recalibrate: bool = False,
    resume: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Fine-tune the checkpoint ``model`` (see :func:`finetune_recipe`) and write the run to
    ``out_dir`` (see :mod:`vgtool.training.trainer`); then set ``best/``'s default threshold.

    Args:
        recalibrate: choose a new threshold on ``val`` (with the target rate and confidence the
            source model was calibrated with, else the defaults of
            :func:`~vgtool.evaluation.calibrate.calibrate`) instead of keeping the source model's.

    Returns:
        :func:`~vgtool.training.trainer.train`'s summary, plus ``threshold``: ``{"action": "kept",
        "recalibrated" or "none" (the source has no calibrated threshold), "postprocess": what
        ``best/`` now holds as ``meta.postprocess``, or None}``.

    Raises:
        InputError: ``recalibrate`` without ``val``, or validation data with no phrase that names
            nothing (nothing to calibrate on).
    """
    if recalibrate and val is None:
        raise InputError("--recalibrate needs validation data (--val) to choose the threshold on")
    from vgtool.training.trainer import train as run_training

    recipe = finetune_recipe(
        model=model, train=train, val=val, epochs=epochs, lr=lr, batch_size=batch_size, overrides=overrides
    )
    source = model_postprocess(model)
    result = run_training(recipe, out_dir, resume=resume, quiet=quiet)
    best = Path(out_dir) / "best"
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: the main process writes best/
        return result
    if recalibrate and val is not None:
        postprocess = _recalibrate(best, val, source, device=recipe.device, quiet=quiet)
        action: ThresholdAction = "recalibrated"
    elif source is not None:
        postprocess = {**source, "kept_from": str(model)}
        action = "kept"
    else:
        postprocess, action = None, "none"
    if postprocess is not None:
        set_model_postprocess(best, postprocess)
    return {**result, "threshold": {"action": action, "postprocess": postprocess}}


def _recalibrate(
    checkpoint: Path, val: DataConfig, source: dict[str, Any] | None, *, device: str, quiet: bool
) -> dict[str, Any]:
    """The threshold for ``checkpoint`` chosen on ``val``, as ``meta.postprocess``."""
    from vgtool.datasets.registry import load_samples
    from vgtool.evaluation.calibrate import calibrate
    from vgtool.grounders import load_grounder

    targets = {
        key: source[key] for key in ("max_no_object_fp", "confidence", "nms_iou") if key in (source or {})
    }
    try:
        postprocess = calibrate(
            load_grounder(checkpoint, device=device), load_samples(val), quiet=quiet, **targets
        )
    except ValueError as err:  # no phrase that names nothing
        raise InputError(f"--recalibrate: {val.path}: {err}") from err
    postprocess["calibrated_on"] = f"{val.path}" + (f" (split {val.split})" if val.split else "")
    return postprocess
