"""The training loop's steps, as in DETR's ``engine.py``: one epoch of optimizer steps, and what
follows an epoch (validation, the best checkpoint, ``last/``, the curves)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from vgtool.checkpoint import save_checkpoint
from vgtool.config import to_dict
from vgtool.data.image_dataset import exit_with_parent
from vgtool.data.preprocess import PreprocessConfig, normalize
from vgtool.device import autocast
from vgtool.errors import VgtoolError
from vgtool.models.base import GroundingModel
from vgtool.training.data import TrainBatch
from vgtool.training.distributed import all_reduce_sum, barrier
from vgtool.training.plots import plot_curves
from vgtool.training.run import Run, TrainData
from vgtool.training.schedule import warmup_cosine
from vgtool.training.stage import Stage
from vgtool.training.state import Counters, save_training_state
from vgtool.training.validate import validate


class TrainingDivergedError(VgtoolError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step reports.

    Attributes:
        losses: the criterion's losses on this process's batch (scalars).
        loss: the total loss averaged over all processes (scalar).
        grad_norm: the gradient norm before clipping (scalar).
        lr: the learning rate of the first parameter group.
    """

    losses: dict[str, torch.Tensor]
    loss: torch.Tensor
    grad_norm: torch.Tensor
    lr: float


def train_one_epoch(
    run: Run,
    model: GroundingModel,
    criterion: torch.nn.Module,
    data: TrainData,
    stage: Stage,
    counters: Counters,
) -> None:
    """Train the rest of the current epoch (all of it, unless a resume starts part-way), logging
    and saving ``last/`` as the recipe says, then move ``counters`` on to the next epoch."""
    from tqdm import tqdm

    recipe = run.recipe
    global_epoch = stage.first_epoch + counters.epoch
    data.dataset.set_epoch(global_epoch)
    loader = DataLoader(
        data.dataset,
        batch_size=recipe.batch_size,
        sampler=data.order(global_epoch, run.info)[counters.batch * recipe.batch_size :],
        num_workers=recipe.num_workers,
        collate_fn=data.collate,
        worker_init_fn=exit_with_parent,
        pin_memory=run.device.type == "cuda",
        # its own generator: starting an iterator draws worker seeds, and from the global RNG
        # that draw would shift dropout after a resume (which starts one mid-epoch)
        generator=torch.Generator().manual_seed(recipe.seed * 100_003 + global_epoch),
    )
    bar = tqdm(
        loader,
        total=stage.steps_per_epoch,
        initial=counters.batch,
        disable=run.quiet or not run.info.is_main,
        desc=f"{stage.config.name} {counters.epoch + 1}/{stage.config.epochs}",
        dynamic_ncols=True,
    )
    model.train()
    for batch in bar:
        result = _train_step(run, criterion, data.preprocess, stage, counters, batch)
        counters.step += 1
        counters.batch += 1
        bar.set_postfix(loss=f"{result.loss.item():.3f}", lr=f"{result.lr:.2e}")
        if counters.step % recipe.log_every_steps == 0 or counters.batch == stage.steps_per_epoch:
            run.log(_train_record(result, counters.step, global_epoch + 1, stage))
        if recipe.save_every_steps and counters.step % recipe.save_every_steps == 0:
            save_last(run, model, stage.optimizer, counters)
        if run.on_step is not None:
            run.on_step(counters.step)
    bar.close()
    counters.epoch += 1
    counters.batch = 0


def _train_step(
    run: Run,
    criterion: torch.nn.Module,
    preprocess: PreprocessConfig,
    stage: Stage,
    counters: Counters,
    batch: TrainBatch,
) -> StepResult:
    """One optimizer step on ``batch`` at the schedule's learning rate for ``counters``."""
    config, optimizer, info = stage.config, stage.optimizer, run.info
    stage_step = counters.epoch * stage.steps_per_epoch + counters.batch
    stage_steps = stage.steps_per_epoch * config.epochs
    multiplier = warmup_cosine(stage_step, stage_steps, config.warmup_steps, config.min_lr_ratio)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * multiplier
    batch = batch.to(run.device)
    num_boxes = all_reduce_sum(torch.tensor(float(sum(len(t["boxes"]) for t in batch.targets))), info)
    outputs = _forward(run, preprocess, stage, batch)
    losses = criterion(outputs, batch.targets, num_boxes=max(num_boxes.item() / info.world_size, 1.0))
    loss = losses["loss"]
    global_loss = all_reduce_sum(loss.detach().float(), info) / info.world_size
    if not torch.isfinite(global_loss):
        raise TrainingDivergedError(
            f"loss became {global_loss.item()} at step {counters.step + 1} ({config.name}, epoch "
            f"{counters.epoch + 1}); the last good checkpoint is in {run.last_dir} (try a lower lr)"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # the norm before clipping, logged: with a small grad_clip most steps are clipped, and
    # the factor they are scaled by is this norm's inverse
    grad_clip = run.recipe.grad_clip
    grad_norm = torch.nn.utils.clip_grad_norm_(stage.trainable, grad_clip if grad_clip > 0 else math.inf)
    optimizer.step()
    return StepResult(losses, global_loss, grad_norm, optimizer.param_groups[0]["lr"])


def _forward(run: Run, preprocess: PreprocessConfig, stage: Stage, batch: TrainBatch) -> dict[str, Any]:
    """The model's outputs on ``batch`` (on the device), taking features from the stage's caches."""
    input_ids, attention_mask = batch.input_ids, batch.attention_mask
    cached: dict[str, Any] = {"image_index": batch.image_index}
    if stage.text_cache is not None:
        cached["text_features"], attention_mask = stage.text_cache(batch.phrases)
        input_ids = None
    pixels = normalize(batch.pixels, preprocess)  # [M, 3, S, S], M distinct images
    with autocast(run.device, run.bf16):
        if stage.image_cache is not None:
            cached["image_features"] = stage.image_cache(
                batch.image_keys, pixels, batch.pixel_rows.tolist(), batch.image_sizes
            )
            pixels = None
            cached["image_index"] = None  # the cache returns one feature map per row
        return stage.trained(pixels, input_ids, attention_mask, **cached)


def _train_record(result: StepResult, step: int, epoch: int, stage: Stage) -> dict[str, Any]:
    """The ``metrics.jsonl`` line of a step (``epoch`` 1-based)."""
    record = {"type": "train", "step": step, "epoch": epoch, "lr": result.lr}
    record.update({k: round(v.item(), 6) for k, v in result.losses.items() if not k[-1].isdigit()})
    record["loss"] = round(result.loss.item(), 6)
    record["grad_norm"] = round(result.grad_norm.item(), 6)
    if stage.image_cache is not None:
        record["image_cache_hits"] = stage.image_cache.hits
        record["image_cache_misses"] = stage.image_cache.misses
    return record


def end_epoch(
    run: Run, model: GroundingModel, data: TrainData, stage: Stage, counters: Counters
) -> dict[str, Any] | None:
    """After an epoch: validate when due and keep the best checkpoint in ``best/``, move on to the
    next stage after the stage's last epoch, save ``last/`` when due, and redraw the curves.

    Returns:
        The validation metrics, or None where this epoch was not validated.
    """
    recipe, info = run.recipe, run.info
    epoch = stage.first_epoch + counters.epoch  # the run's 1-based number of the epoch just trained
    validating = counters.epoch % recipe.eval_every_epochs == 0 or counters.epoch == stage.config.epochs
    metrics = None
    if info.is_main and data.val_loader is not None and validating:
        metrics = validate(model, data.val_loader, data.preprocess, run.device, run.bf16)
        run.log({"type": "val", "step": counters.step, "epoch": epoch, **metrics})
        if not run.quiet:
            from tqdm import tqdm

            tqdm.write(_format_val(metrics, epoch))
        if metrics.get("acc@0.5", -1.0) > counters.best_acc:
            counters.best_acc = metrics["acc@0.5"]
            save_checkpoint(model, run.best_dir, extra={"step": counters.step, "val": metrics})
    stage_done = counters.epoch == stage.config.epochs
    if stage_done:
        counters.stage += 1
        counters.epoch = 0
    if stage_done or counters.epoch % recipe.save_every_epochs == 0:
        save_last(run, model, stage.optimizer, counters)
    if info.is_main and validating:
        plot_curves(run.metrics_path, run.out_dir / "curves.png")
    return metrics


def _format_val(metrics: dict[str, Any], epoch: int) -> str:
    parts = [f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float)]
    return f"val epoch {epoch}: " + ", ".join(parts)


def save_last(run: Run, model: GroundingModel, optimizer: torch.optim.Optimizer, counters: Counters) -> None:
    """Save the training state to ``last/`` (the main process; the others wait for it)."""
    if run.info.is_main:
        save_training_state(
            run.last_dir,
            model,
            optimizer,
            counters.as_dict(),
            extra={"recipe": to_dict(run.recipe), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")},
        )
    barrier(run.info)
