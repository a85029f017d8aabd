"""``train()``: the whole run — data, model, stages, optimisation, validation, checkpoints, resume.

The run is a sequence of named steps: here, the run's set-up (folder, device, model, resume, data)
and its end; :func:`~vgtool.training.stage.start_stage` for each stage; and for each epoch
:func:`~vgtool.training.engine.train_one_epoch` and :func:`~vgtool.training.engine.end_epoch`.

Layout of ``out_dir``:
    recipe.json        the resolved recipe
    metrics.jsonl      one JSON line per logged step and per validation
    curves.png         loss, learning rate and validation accuracy
    last/              latest checkpoint + optimizer + counters + RNG (what ``--resume`` reads)
    best/              checkpoint with the best validation Acc@0.5
    feature_cache/     cached vision features, with ``cache_features_on_disk`` only
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from vgtool.atomic import write_bytes_atomic
from vgtool.checkpoint import load_checkpoint, save_checkpoint
from vgtool.config import to_dict
from vgtool.data.image_dataset import exit_with_parent
from vgtool.data.preprocess import PreprocessConfig
from vgtool.datasets.registry import load_samples
from vgtool.datasets.sample import GroundingSample
from vgtool.device import cpu_supports_bf16, resolve_device
from vgtool.errors import InputError
from vgtool.models.base import GroundingModel
from vgtool.models.build import build_model
from vgtool.models.memory_format import channels_last_trains_safely, prefers_channels_last
from vgtool.models.text import phrase_tokenizer
from vgtool.training.augment import only_mirrors
from vgtool.training.config import RecipeConfig
from vgtool.training.criteria import criterion_for
from vgtool.training.data import GroundingTrainDataset, TrainCollate
from vgtool.training.distributed import DistInfo, init_distributed, shutdown
from vgtool.training.engine import TrainingDivergedError, end_epoch, train_one_epoch
from vgtool.training.run import Run, TrainData
from vgtool.training.stage import Stage, start_stage
from vgtool.training.state import Counters, load_training_state

__all__ = ["TrainingDivergedError", "train"]

logger = logging.getLogger(__name__)
MIN_FREE_BYTES = 200 * 2**20


def train(
    recipe: RecipeConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    on_step: Callable[[int], None] | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train a model of any family (:mod:`vgtool.models.build`) as the recipe says and write
    checkpoints, metrics and plots to ``out_dir``.

    Launch with ``torchrun --nproc-per-node N -m vgtool train ...`` for data-parallel training.

    Args:
        recipe: the resolved recipe.
        out_dir: run folder (see the module docstring).
        resume: continue from ``out_dir/last`` exactly (model, optimizer, schedule, RNG, step).
        quiet: no progress bars.
        on_step: called with the global step after every optimizer step (and any save).
        on_epoch_end: called after each epoch, once its validation and saves are done, with the
            run's 1-based epoch number and that epoch's validation metrics (``{}`` where it was
            not validated). An exception it raises ends the run there.

    Returns:
        Final counters and the last validation metrics.

    Raises:
        TrainingDivergedError: the loss became non-finite; ``last/`` keeps the last good state.
    """
    out_dir = Path(out_dir)
    info, dist_device = init_distributed(recipe.device)
    try:
        run = _start_run(recipe, out_dir, info, dist_device, resume=resume, quiet=quiet, on_step=on_step)
        return _train(run, resume=resume, on_epoch_end=on_epoch_end)
    finally:
        shutdown(info)


def _train(
    run: Run, *, resume: bool, on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """The run's steps: set up the model and data, then train stage by stage, epoch by epoch."""
    recipe = run.recipe
    train_samples = load_samples(recipe.data.train)
    if not train_samples:
        raise InputError(f"{recipe.data.train.path}: no training samples")
    model = _prepare_model(run)
    counters, resumed = Counters(), None
    if resume:
        counters, resumed = _resume(run, model)
    data = _prepare_data(run, model, train_samples)
    criterion = criterion_for(recipe, model.config).to(run.device)
    _open_run_files(run, counters.step if resume else None)
    stage: Stage | None = None
    last_val: dict[str, Any] = {}
    while counters.stage < len(recipe.stages):
        stage = start_stage(run, model, data, counters.stage, previous=stage, resumed=resumed)
        resumed = None
        for _ in range(counters.epoch, stage.config.epochs):
            train_one_epoch(run, model, criterion, data, stage, counters)
            epoch = stage.first_epoch + counters.epoch  # 1-based, of the run
            val = end_epoch(run, model, data, stage, counters)
            if val is not None:
                last_val = val
            if on_epoch_end is not None:
                on_epoch_end(epoch, val or {})
    return _finish(run, model, data, counters, last_val)


def _start_run(
    recipe: RecipeConfig,
    out_dir: Path,
    info: DistInfo,
    dist_device: torch.device | None,
    *,
    resume: bool,
    quiet: bool,
    on_step: Callable[[int], None] | None,
) -> Run:
    """Check the run folder, pick the device and precision, and seed the RNG."""
    if info.is_main:
        _check_output_dir(out_dir)
    if not resume and (out_dir / "last" / "train_state.json").exists():
        raise InputError(
            f"{out_dir}: holds an earlier run; pass --resume to continue it, or choose another --out"
        )
    device = dist_device or resolve_device(recipe.device)
    torch.manual_seed(recipe.seed)
    bf16 = device.type == "cuda" if recipe.amp == "auto" else recipe.amp == "bf16"
    if bf16 and device.type == "cpu" and not cpu_supports_bf16():
        logger.warning(
            "amp: bf16 on a CPU without native bf16 instructions (AVX512-BF16 or AMX) is emulated and "
            "slow; amp: none trains faster on this machine"
        )
    return Run(recipe, out_dir, info, device, bf16, quiet=quiet, on_step=on_step)


def _check_output_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise InputError(f"{out_dir}: output folder is not writable ({err.strerror or err})") from err
    free = shutil.disk_usage(out_dir).free
    if free < MIN_FREE_BYTES:
        raise InputError(f"{out_dir}: only {free // 2**20} MiB free on disk; checkpoints need more")


def _prepare_model(run: Run) -> GroundingModel:
    """The model to train (new, or ``init_from``'s) on the run's device, in training mode."""
    recipe = run.recipe
    model = load_checkpoint(recipe.init_from) if recipe.init_from else build_model(recipe.model)
    model = model.train().to(run.device)
    if prefers_channels_last(model, run.device):
        # a convolutional backbone trains faster channels-last (oneDNN on CPU: the bundled ResNet's
        # forward and backward 1.35-1.4x faster in fp32, 1.4-2.5x in bf16); checkpoints store it contiguous
        if channels_last_trains_safely(model, run.device):
            model.use_channels_last()
        else:
            logger.info("vision backbone: contiguous (a strided 1x1 convolution has fewer than 16 channels)")
    return model


def _resume(
    run: Run, model: GroundingModel
) -> tuple[Counters, tuple[dict[str, Any], dict[str, torch.Tensor]]]:
    """Load ``last/``'s weights and config into ``model``; return its counters and the rest of its
    state (optimizer and RNG, which the first stage restores)."""
    document, tensors = load_training_state(run.last_dir)
    state_model = load_checkpoint(run.last_dir)
    model.config = state_model.config
    model.load_state_dict(state_model.state_dict(), strict=False)
    return Counters(**document["counters"]), (document, tensors)


def _prepare_data(run: Run, model: GroundingModel, train_samples: list[GroundingSample]) -> TrainData:
    """The training dataset and batching for ``model``, and the validation loader (main process)."""
    recipe = run.recipe
    preprocess = PreprocessConfig.from_model(model)
    tokenizer = phrase_tokenizer(model.config.text)
    collate = TrainCollate(tokenizer)
    dataset = GroundingTrainDataset(train_samples, preprocess, recipe.augment, seed=recipe.seed)
    val_loader = None
    if recipe.data.val is not None and run.info.is_main:
        val_samples = load_samples(recipe.data.val)[: recipe.data.max_val_samples]
        val_loader = DataLoader(
            GroundingTrainDataset(val_samples, preprocess, None),
            batch_size=recipe.batch_size,
            num_workers=recipe.num_workers,
            collate_fn=collate,
            worker_init_fn=exit_with_parent,
        )
    grouped = recipe.group_by_image and only_mirrors(recipe.augment)
    if recipe.group_by_image and not grouped:
        logger.info("group_by_image: off, the augmentation gives every sample its own backbone input")
    return TrainData(preprocess, tokenizer, dataset, collate, val_loader, grouped)


def _open_run_files(run: Run, resumed_step: int | None) -> None:
    """Write ``recipe.json``; on a resume, drop the log lines of steps after ``last/`` was saved
    (they are trained again), so none repeat."""
    if not run.info.is_main:
        return
    (run.out_dir / "recipe.json").write_text(json.dumps(to_dict(run.recipe), indent=2) + "\n")
    if resumed_step is None or not run.metrics_path.exists():
        return
    kept = [
        line
        for line in run.metrics_path.read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= resumed_step
    ]
    write_bytes_atomic(run.metrics_path, ("\n".join(kept) + "\n" if kept else "").encode())


def _finish(
    run: Run, model: GroundingModel, data: TrainData, counters: Counters, last_val: dict[str, Any]
) -> dict[str, Any]:
    """Without validation, the final model is the best one; return the run's summary."""
    if run.info.is_main and data.val_loader is None:
        save_checkpoint(model, run.best_dir, extra={"step": counters.step, "val": None})
    return {"counters": counters.as_dict(), "val": last_val, "out_dir": str(run.out_dir)}
