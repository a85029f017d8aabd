"""The set-up of a training stage: what trains, its optimizer, and where features come from."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from vgtool.models.base import GroundingModel
from vgtool.training.augment import phrase_variants
from vgtool.training.config import StageConfig
from vgtool.training.feature_cache import (
    ImageFeatureCache,
    TextFeatureCache,
    backbone_fingerprint,
    image_cache_blocker,
)
from vgtool.training.run import Run, TrainData
from vgtool.training.state import optimizer_state_from, restore_rng

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """A stage's settings and what :func:`start_stage` built for it.

    Attributes:
        config: the stage's part of the recipe.
        first_epoch: the run's (0-based) number of the stage's first epoch.
        steps_per_epoch: optimizer steps in each of its epochs, on every process.
        optimizer: over the parameter groups the stage trains.
        trainable: the parameters that get gradients (the ones clipped).
        trained: the model, wrapped for data-parallel training where the run is distributed.
        image_cache: the vision features of frozen-backbone stages; None where they are computed
            every step.
        text_cache: the text features of frozen-encoder stages; None where they are computed.
    """

    config: StageConfig
    first_epoch: int
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    trainable: list[nn.Parameter]
    trained: nn.Module
    image_cache: ImageFeatureCache | None
    text_cache: TextFeatureCache | None


def start_stage(
    run: Run,
    model: GroundingModel,
    data: TrainData,
    index: int,
    previous: Stage | None = None,
    resumed: tuple[dict[str, Any], dict[str, torch.Tensor]] | None = None,
) -> Stage:
    """Set up stage ``index`` of the recipe.

    Args:
        previous: the stage before, in this process: its feature caches are kept while the
            encoders they hold features of stay frozen.
        resumed: the ``(document, tensors)`` of ``last/`` when this stage resumes a run: the RNG
            is restored from them, and the optimizer state where ``last/`` was saved within the stage.
    """
    recipe = run.recipe
    config = recipe.stages[index]
    _configure_stage(model, config)
    groups = _param_groups(model, config, recipe.weight_decay)
    trainable = [p for p in model.parameters() if p.requires_grad]  # for clipping, once a stage
    optimizer = _optimizer(recipe.optimizer, groups, run.device)
    if resumed is not None:
        document, tensors = resumed
        if document["counters"]["epoch"] or document["counters"]["batch"]:
            # saved within this stage; a save at its start (the end of the stage before) holds the
            # earlier stage's optimizer, and a stage starts with a new one
            optimizer.load_state_dict(optimizer_state_from(document, tensors))
        restore_rng(tensors, document["rng"])
    text_cache = _text_cache_for_stage(previous.text_cache if previous else None, run, model, data, config)
    image_cache, image_mode = _image_cache_for_stage(
        previous.image_cache if previous else None, run, model, data
    )
    data.dataset.cached_sizes = image_cache.sizes if image_cache is not None else None
    logger.info("%s: vision features %s", config.name, image_mode)
    if run.info.is_main and not run.quiet:
        from tqdm import tqdm

        tqdm.write(f"{config.name}: vision features {image_mode}")
    trained = model
    if run.info.enabled:
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[run.device.index] if run.device.type == "cuda" else None
        )
    return Stage(
        config=config,
        first_epoch=sum(s.epochs for s in recipe.stages[:index]),
        steps_per_epoch=math.ceil(len(data.order(0, run.info)) / recipe.batch_size),
        optimizer=optimizer,
        trainable=trainable,
        trained=trained,
        image_cache=image_cache,
        text_cache=text_cache,
    )


def _configure_stage(model: GroundingModel, stage: StageConfig) -> None:
    """Freeze/unfreeze for the stage; a backbone once trained is recorded as not frozen, so
    checkpoints store its weights instead of referencing the hub version."""
    train_vision, train_text = stage.vision_lr > 0, stage.text_lr > 0
    model.set_frozen(vision=not train_vision, text=not train_text)
    config = model.config
    model.config = replace(
        config,
        vision=replace(config.vision, frozen=config.vision.frozen and not train_vision),
        text=replace(config.text, frozen=config.text.frozen and not train_text),
    )


def _param_groups(model: GroundingModel, stage: StageConfig, weight_decay: float) -> list[dict[str, Any]]:
    """The new parts at ``lr``; each backbone as its own group when its learning rate is above 0."""
    vision_ids = {id(p) for p in model.vision.parameters()}
    text_ids = {id(p) for p in model.text.parameters()}
    new = [p for p in model.parameters() if id(p) not in vision_ids | text_ids]
    parts = [("new", new, stage.lr)]
    parts += [("vision", list(model.vision.parameters()), stage.vision_lr)] if stage.vision_lr > 0 else []
    parts += [("text", list(model.text.parameters()), stage.text_lr)] if stage.text_lr > 0 else []
    return [
        {"params": params, "lr": lr, "base_lr": lr, "name": name, "weight_decay": weight_decay}
        for name, params, lr in parts
    ]


def _optimizer(name: str, groups: list[dict[str, Any]], device: torch.device) -> torch.optim.Optimizer:
    """AdamW (fused into one kernel per step where the device has it: about 2.5x faster steps of
    the optimizer on CPU) or plain SGD."""
    if name != "adamw":
        return torch.optim.SGD(groups)
    return torch.optim.AdamW(groups, fused=device.type in ("cpu", "cuda") or None)


def _text_cache_for_stage(
    cache: TextFeatureCache | None, run: Run, model: GroundingModel, data: TrainData, config: StageConfig
) -> TextFeatureCache | None:
    """The text-feature cache for a stage (the earlier stage's, while the encoder stayed frozen)."""
    recipe = run.recipe
    if not (recipe.cache_text and model.text_frozen):
        return None
    if cache is not None:
        return cache
    cache = TextFeatureCache(model, data.tokenizer, run.device, torch.float32)
    # all at once, in a fixed order: a resumed run gets the very same features (see the class)
    started = time.perf_counter()
    encoded = cache.prefill(
        [v for s in data.dataset.samples for v in phrase_variants(s.phrase, recipe.augment)]
    )
    logger.info(
        "%s: %d distinct phrases encoded in %.1f s", config.name, encoded, time.perf_counter() - started
    )
    return cache


def _image_cache_for_stage(
    cache: ImageFeatureCache | None, run: Run, model: GroundingModel, data: TrainData
) -> tuple[ImageFeatureCache | None, str]:
    """The vision-feature cache for a stage (the earlier stage's, while the backbone stayed frozen)
    and how vision features are obtained, in words."""
    recipe = run.recipe
    blocker = image_cache_blocker(recipe.cache_features, model.vision_frozen, recipe.augment)
    if blocker is not None:
        return None, f"computed every step ({blocker})"
    if cache is None:
        directory = None
        if recipe.cache_features_on_disk:
            fingerprint = backbone_fingerprint(model, data.preprocess, run.bf16, str(run.device))
            directory = run.out_dir / "feature_cache" / fingerprint
        cache = ImageFeatureCache(model, run.device, directory=directory)
    return cache, f"from the cache ({cache.where}; {len(cache)} images cached so far)"
