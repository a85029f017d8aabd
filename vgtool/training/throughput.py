"""Stage-1 training throughput with and without the vision-feature cache (``vgtool bench --train-recipe``).

The recipe's first stage (frozen vision backbone), cut to a few epochs, is trained twice in a
scratch folder, once with
the backbone run every step and once from :class:`~vgtool.training.feature_cache.ImageFeatureCache`,
without validation or mid-stage checkpoints. Epochs are timed from the optimizer steps: the first
epoch, while the cache fills (``warmup``, from the end of its first step), apart from the later
ones (``steady``), which is what the remaining epochs of a long run cost.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from vgtool.datasets.registry import load_samples
from vgtool.device import resolve_device
from vgtool.errors import ConfigError
from vgtool.training.config import RecipeConfig
from vgtool.training.feature_cache import image_cache_blocker
from vgtool.training.trainer import train


def train_throughput(
    recipe: RecipeConfig, *, epochs: int = 2, out_json: str | Path | None = None, quiet: bool = True
) -> dict[str, Any]:
    """Train the recipe's first stage without and with the feature cache and report samples/s.

    Args:
        recipe: its first stage must keep the vision backbone frozen (``vision_lr: 0``), and its
            augmentation must at most flip the image.
        epochs: train the stage for this many epochs (at least 2: the first fills the cache).
        out_json: also write the report here.
        quiet: no progress bars.

    Returns:
        ``train_samples_per_s`` (steady state) ``{"uncached", "cached"}`` and their ``speedup``;
        per mode, ``warmup_samples_per_s`` (first epoch) and ``steady_samples_per_s``; the cache's
        final hit and miss counts.

    Raises:
        ConfigError: the first stage cannot use the cache, or ``epochs`` is below 2.
    """
    stage = recipe.stages[0]
    blocker = image_cache_blocker(True, stage.vision_lr == 0, recipe.augment)
    if blocker is not None:
        raise ConfigError(f"stage {stage.name!r} cannot train from cached features: {blocker}")
    if epochs < 2:
        raise ConfigError(f"epochs: needs at least 2 (the first fills the cache), got {epochs}")
    stage = replace(stage, epochs=epochs)
    recipe = replace(
        recipe,
        stages=(stage,),
        data=replace(recipe.data, val=None),
        eval_every_epochs=epochs,  # no plotting between epochs
        save_every_epochs=epochs,
        save_every_steps=0,
    )
    num_samples = len(load_samples(recipe.data.train))
    steps_per_epoch = math.ceil(num_samples / recipe.batch_size)
    report: dict[str, Any] = {
        "train_samples": num_samples,
        "batch_size": recipe.batch_size,
        "epochs": stage.epochs,
        "device": str(resolve_device(recipe.device)),
        "augment_hflip": recipe.augment.hflip if recipe.augment.enabled else 0.0,
    }
    for mode, cached in (("uncached", False), ("cached", True)):
        started, step_ends, last_train = _timed_run(replace(recipe, cache_features=cached), quiet)
        first_epoch_end, last_end = step_ends[steps_per_epoch - 1], step_ends[-1]
        result = {
            "warmup_samples_per_s": (num_samples - recipe.batch_size) / (first_epoch_end - step_ends[0])
            if steps_per_epoch > 1
            else None,
            "steady_samples_per_s": num_samples * (stage.epochs - 1) / (last_end - first_epoch_end),
            "startup_and_first_step_s": step_ends[0] - started,
            "total_s": time.perf_counter() - started,
        }
        if cached:
            result["image_cache_hits"] = last_train.get("image_cache_hits")
            result["image_cache_misses"] = last_train.get("image_cache_misses")
        report[mode] = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
    uncached, cached_ = report["uncached"], report["cached"]
    report["train_samples_per_s"] = {
        "uncached": uncached["steady_samples_per_s"],
        "cached": cached_["steady_samples_per_s"],
    }
    report["speedup"] = round(cached_["steady_samples_per_s"] / uncached["steady_samples_per_s"], 2)
    if uncached["warmup_samples_per_s"] and cached_["warmup_samples_per_s"]:
        report["warmup_speedup"] = round(
            cached_["warmup_samples_per_s"] / uncached["warmup_samples_per_s"], 2
        )
    if out_json is not None:
        Path(out_json).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _timed_run(recipe: RecipeConfig, quiet: bool) -> tuple[float, list[float], dict[str, Any]]:
    """Train in a scratch folder; return the start time, each step's end time and the last train log."""
    step_ends: list[float] = []
    with tempfile.TemporaryDirectory(prefix="vgtool-throughput-") as folder:
        started = time.perf_counter()
        train(
            recipe,
            Path(folder) / "run",
            quiet=quiet,
            on_step=lambda _step: step_ends.append(time.perf_counter()),
        )
        records = (Path(folder) / "run" / "metrics.jsonl").read_text().splitlines()
    last_train = [r for r in map(json.loads, records) if r.get("type") == "train"][-1]
    return started, step_ends, last_train
