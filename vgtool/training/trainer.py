"""``train()``: the whole run — data, model, stages, optimisation, validation, checkpoints, resume.

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
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from vgtool.atomic import write_bytes_atomic
from vgtool.checkpoint import load_checkpoint, save_checkpoint
from vgtool.config import to_dict
from vgtool.data.preprocess import PreprocessConfig, normalize
from vgtool.data.tokenize import PhraseTokenizer
from vgtool.datasets.registry import load_samples
from vgtool.device import autocast, cpu_supports_bf16, resolve_device
from vgtool.errors import InputError, VgtoolError
from vgtool.models.inference import channels_last_trains_safely, prefers_channels_last
from vgtool.models.vlgtr import VLGTR, build_model
from vgtool.training.augment import only_mirrors, phrase_variants
from vgtool.training.config import RecipeConfig, StageConfig
from vgtool.training.criterion import SetCriterion
from vgtool.training.data import GroundingTrainDataset, TrainCollate, epoch_order, grouped_epoch_order
from vgtool.training.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown
from vgtool.training.feature_cache import (
    ImageFeatureCache,
    TextFeatureCache,
    backbone_fingerprint,
    image_cache_blocker,
)
from vgtool.training.plots import plot_curves
from vgtool.training.schedule import warmup_cosine
from vgtool.training.state import load_training_state, optimizer_state_from, restore_rng, save_training_state
from vgtool.training.validate import validate

logger = logging.getLogger(__name__)
MIN_FREE_BYTES = 200 * 2**20


class TrainingDivergedError(VgtoolError):
    """The loss became NaN or infinite."""


@dataclass
class Counters:
    """Where training stands; all that ``--resume`` needs besides tensors."""

    stage: int = 0
    epoch: int = 0  # epoch within the stage
    batch: int = 0  # batches done within the epoch
    step: int = 0  # optimizer steps done in total
    best_acc: float = -1.0

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


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


def _optimizer(name: str, groups: list[dict[str, Any]], device: torch.device) -> torch.optim.Optimizer:
    """AdamW (fused into one kernel per step where the device has it: about 2.5x faster steps of
    the optimizer on CPU) or plain SGD."""
    if name != "adamw":
        return torch.optim.SGD(groups)
    return torch.optim.AdamW(groups, fused=device.type in ("cpu", "cuda") or None)


def _param_groups(model: VLGTR, stage: StageConfig, weight_decay: float) -> list[dict[str, Any]]:
    vision_ids = {id(p) for p in model.vision.parameters()}
    text_ids = {id(p) for p in model.text.parameters()}
    new = [p for p in model.parameters() if id(p) not in vision_ids | text_ids]
    groups = [{"params": new, "lr": stage.lr, "base_lr": stage.lr, "name": "new"}]
    if stage.vision_lr > 0:
        groups.append(
            {
                "params": list(model.vision.parameters()),
                "lr": stage.vision_lr,
                "base_lr": stage.vision_lr,
                "name": "vision",
            }
        )
    if stage.text_lr > 0:
        groups.append(
            {
                "params": list(model.text.parameters()),
                "lr": stage.text_lr,
                "base_lr": stage.text_lr,
                "name": "text",
            }
        )
    for group in groups:
        group["weight_decay"] = weight_decay
    return groups


def _configure_stage(model: VLGTR, stage: StageConfig) -> None:
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


def _image_cache_for_stage(
    cache: ImageFeatureCache | None,
    recipe: RecipeConfig,
    model: VLGTR,
    device: torch.device,
    out_dir: Path,
    fingerprint_parts: tuple,
) -> tuple[ImageFeatureCache | None, str]:
    """The vision-feature cache for a stage (the earlier stage's, while the backbone stayed frozen)
    and how vision features are obtained, in words."""
    blocker = image_cache_blocker(recipe.cache_features, model.vision_frozen, recipe.augment)
    if blocker is not None:
        return None, f"computed every step ({blocker})"
    if cache is None:
        directory = None
        if recipe.cache_features_on_disk:
            directory = out_dir / "feature_cache" / backbone_fingerprint(model, *fingerprint_parts)
        cache = ImageFeatureCache(model, device, directory=directory)
    return cache, f"from the cache ({cache.where}; {len(cache)} images cached so far)"


def _build_model(recipe: RecipeConfig) -> VLGTR:
    if recipe.init_from:
        model = load_checkpoint(recipe.init_from)
        return model.train()
    return build_model(recipe.model).train()


def _categories(recipe: RecipeConfig, samples) -> tuple[str, ...]:
    """The category names of the training samples, sorted (for ``loss.category_weight``)."""
    names = sorted({s.category for s in samples if s.category is not None})
    if not names:
        raise InputError(
            f"{recipe.data.train.path}: loss.category_weight is {recipe.loss.category_weight}, "
            "but no training sample names its objects' category"
        )
    return tuple(names)


def train(
    recipe: RecipeConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train VL-GTR as the recipe says and write checkpoints, metrics and plots to ``out_dir``.

    Launch with ``torchrun --nproc-per-node N -m vgtool train ...`` for data-parallel training.

    Args:
        recipe: the resolved recipe.
        out_dir: run folder (see the module docstring).
        resume: continue from ``out_dir/last`` exactly (model, optimizer, schedule, RNG, step).
        quiet: no progress bars.
        on_step: called with the global step after every optimizer step (and any save).

    Returns:
        Final counters and the last validation metrics.

    Raises:
        TrainingDivergedError: the loss became non-finite; ``last/`` keeps the last good state.
    """
    out_dir = Path(out_dir)
    info, dist_device = init_distributed(recipe.device)
    try:
        return _train(recipe, out_dir, info, dist_device, resume=resume, quiet=quiet, on_step=on_step)
    finally:
        shutdown(info)


def _train(recipe, out_dir, info: DistInfo, dist_device, *, resume, quiet, on_step) -> dict[str, Any]:
    from tqdm import tqdm

    if info.is_main:
        _check_output_dir(out_dir)
    last_dir, best_dir = out_dir / "last", out_dir / "best"
    if not resume and (last_dir / "train_state.json").exists():
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

    train_samples = load_samples(recipe.data.train)
    if not train_samples:
        raise InputError(f"{recipe.data.train.path}: no training samples")
    model = _build_model(recipe)
    if recipe.loss.category_weight > 0 and not model.config.categories:
        model.add_category_head(_categories(recipe, train_samples))
    elif recipe.loss.category_weight == 0 and model.category_head is not None:
        model.category_head.requires_grad_(False)  # unused: kept as it is (DDP needs every trained one used)
    model = model.to(device)
    if prefers_channels_last(model, device):
        # a convolutional backbone trains faster channels-last (oneDNN on CPU: the bundled ResNet's
        # forward and backward 1.35-1.4x faster in fp32, 1.4-2.5x in bf16); checkpoints store it contiguous
        if channels_last_trains_safely(model, device):
            model.use_channels_last()
        else:
            logger.info("vision backbone: contiguous (a strided 1x1 convolution has fewer than 16 channels)")
    counters = Counters()
    resume_document, resume_tensors = None, None
    if resume:
        resume_document, resume_tensors = load_training_state(last_dir)
        counters = Counters(**resume_document["counters"])
        state_model = load_checkpoint(last_dir)
        model.config = state_model.config
        model.load_state_dict(state_model.state_dict(), strict=False)
        del state_model
    preprocess = PreprocessConfig.from_model(model)
    tokenizer = PhraseTokenizer.for_model(model)
    collate = TrainCollate(tokenizer)
    dataset = GroundingTrainDataset(
        train_samples,
        preprocess,
        recipe.augment,
        seed=recipe.seed,
        categories=model.config.categories if recipe.loss.category_weight > 0 else (),
    )
    val_loader = None
    if recipe.data.val is not None and info.is_main:
        val_samples = load_samples(recipe.data.val)[: recipe.data.max_val_samples]
        val_loader = DataLoader(
            GroundingTrainDataset(val_samples, preprocess, None),
            batch_size=recipe.batch_size,
            num_workers=recipe.num_workers,
            collate_fn=collate,
        )
    criterion = SetCriterion(recipe.loss).to(device)
    if info.is_main:
        (out_dir / "recipe.json").write_text(json.dumps(to_dict(recipe), indent=2) + "\n")
    metrics_path = out_dir / "metrics.jsonl"
    last_val: dict[str, Any] = {}
    epochs_before = [sum(s.epochs for s in recipe.stages[:i]) for i in range(len(recipe.stages))]
    image_cache: ImageFeatureCache | None = None
    text_cache: TextFeatureCache | None = None

    if resume and info.is_main and metrics_path.exists():
        # Steps after the last save are trained again; drop their old log lines so none repeat.
        kept = [
            line
            for line in metrics_path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= counters.step
        ]
        write_bytes_atomic(metrics_path, ("\n".join(kept) + "\n" if kept else "").encode())

    def log(record: dict[str, Any]) -> None:
        if info.is_main:
            with open(metrics_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")

    grouped = recipe.group_by_image and only_mirrors(recipe.augment)
    if recipe.group_by_image and not grouped:
        logger.info("group_by_image: off, the augmentation gives every sample its own backbone input")

    def order_for_epoch(epoch: int) -> list[int]:
        if grouped:
            return grouped_epoch_order(dataset.image_numbers, recipe.seed, epoch, info.rank, info.world_size)
        return epoch_order(len(dataset), recipe.seed, epoch, info.rank, info.world_size)

    while counters.stage < len(recipe.stages):
        stage = recipe.stages[counters.stage]
        _configure_stage(model, stage)
        groups = _param_groups(model, stage, recipe.weight_decay)
        trainable = [p for p in model.parameters() if p.requires_grad]  # for clipping, once a stage
        optimizer = _optimizer(recipe.optimizer, groups, device)
        if resume_document is not None:
            optimizer.load_state_dict(optimizer_state_from(resume_document, resume_tensors))
            restore_rng(resume_tensors, resume_document["rng"])
            resume_document = None
        if not (recipe.cache_text and model.text_frozen):
            text_cache = None
        elif text_cache is None:  # kept from stage to stage while the encoder stays frozen
            text_cache = TextFeatureCache(model, tokenizer, device, torch.float32)
            # all at once, in a fixed order: a resumed run gets the very same features (see the class)
            started = time.perf_counter()
            encoded = text_cache.prefill(
                [v for s in train_samples for v in phrase_variants(s.phrase, recipe.augment)]
            )
            logger.info(
                "%s: %d distinct phrases encoded in %.1f s",
                stage.name,
                encoded,
                time.perf_counter() - started,
            )
        image_cache, image_mode = _image_cache_for_stage(
            image_cache, recipe, model, device, out_dir, (preprocess, bf16, str(device))
        )
        dataset.cached_sizes = image_cache.sizes if image_cache is not None else None
        logger.info("%s: vision features %s", stage.name, image_mode)
        if info.is_main and not quiet:
            tqdm.write(f"{stage.name}: vision features {image_mode}")
        trained = model
        if info.enabled:
            trained = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        per_rank = len(order_for_epoch(0))
        steps_per_epoch = math.ceil(per_rank / recipe.batch_size)
        stage_steps = steps_per_epoch * stage.epochs
        while counters.epoch < stage.epochs:
            global_epoch = epochs_before[counters.stage] + counters.epoch
            dataset.set_epoch(global_epoch)
            order = order_for_epoch(global_epoch)
            loader = DataLoader(
                dataset,
                batch_size=recipe.batch_size,
                sampler=order[counters.batch * recipe.batch_size :],
                num_workers=recipe.num_workers,
                collate_fn=collate,
                pin_memory=device.type == "cuda",
                # its own generator: starting an iterator draws worker seeds, and from the global RNG
                # that draw would shift dropout after a resume (which starts one mid-epoch)
                generator=torch.Generator().manual_seed(recipe.seed * 100_003 + global_epoch),
            )
            bar = tqdm(
                loader,
                total=steps_per_epoch,
                initial=counters.batch,
                disable=quiet or not info.is_main,
                desc=f"{stage.name} {counters.epoch + 1}/{stage.epochs}",
                dynamic_ncols=True,
            )
            model.train()
            for batch in bar:
                stage_step = counters.epoch * steps_per_epoch + counters.batch
                multiplier = warmup_cosine(stage_step, stage_steps, stage.warmup_steps, stage.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * multiplier
                batch = batch.to(device)
                num_boxes = all_reduce_sum(
                    torch.tensor(float(sum(len(t["boxes"]) for t in batch.targets))), info
                )
                input_ids, attention_mask = batch.input_ids, batch.attention_mask
                cached: dict[str, Any] = {"image_index": batch.image_index}
                if text_cache is not None:
                    cached["text_features"], attention_mask = text_cache(batch.phrases)
                    input_ids = None
                pixels = normalize(batch.pixels, preprocess)  # [M, 3, S, S], M distinct images
                with autocast(device, bf16):
                    if image_cache is not None:
                        cached["image_features"] = image_cache(
                            batch.image_keys, pixels, batch.pixel_rows.tolist(), batch.image_sizes
                        )
                        pixels = None
                        cached["image_index"] = None  # the cache returns one feature map per row
                    outputs = trained(pixels, input_ids, attention_mask, **cached)
                losses = criterion(
                    outputs, batch.targets, num_boxes=max(num_boxes.item() / info.world_size, 1.0)
                )
                loss = losses["loss"]
                global_loss = all_reduce_sum(loss.detach().float(), info) / info.world_size
                if not torch.isfinite(global_loss):
                    raise TrainingDivergedError(
                        f"loss became {global_loss.item()} at step {counters.step + 1} ({stage.name}, epoch "
                        f"{counters.epoch + 1}); the last good checkpoint is in {last_dir} (try a lower lr)"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # the norm before clipping, logged: with a small grad_clip most steps are clipped, and
                # the factor they are scaled by is this norm's inverse
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    trainable, recipe.grad_clip if recipe.grad_clip > 0 else math.inf
                )
                optimizer.step()
                counters.step += 1
                counters.batch += 1
                lr = optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{global_loss.item():.3f}", lr=f"{lr:.2e}")
                if counters.step % recipe.log_every_steps == 0 or counters.batch == steps_per_epoch:
                    record = {"type": "train", "step": counters.step, "epoch": global_epoch + 1, "lr": lr}
                    record.update({k: round(v.item(), 6) for k, v in losses.items() if not k[-1].isdigit()})
                    record["loss"] = round(global_loss.item(), 6)
                    record["grad_norm"] = round(grad_norm.item(), 6)
                    if image_cache is not None:
                        record["image_cache_hits"] = image_cache.hits
                        record["image_cache_misses"] = image_cache.misses
                    log(record)
                if recipe.save_every_steps and counters.step % recipe.save_every_steps == 0:
                    _save_last(model, optimizer, counters, recipe, last_dir, info)
                if on_step is not None:
                    on_step(counters.step)
            bar.close()
            counters.epoch += 1
            counters.batch = 0
            validating = counters.epoch % recipe.eval_every_epochs == 0 or counters.epoch == stage.epochs
            if info.is_main and val_loader is not None and validating:
                last_val = validate(model, val_loader, preprocess, device, bf16)
                log({"type": "val", "step": counters.step, "epoch": global_epoch + 1, **last_val})
                if not quiet:
                    tqdm.write(_format_val(last_val, global_epoch + 1))
                if last_val.get("acc@0.5", -1.0) > counters.best_acc:
                    counters.best_acc = last_val["acc@0.5"]
                    save_checkpoint(model, best_dir, extra={"step": counters.step, "val": last_val})
            stage_done = counters.epoch == stage.epochs
            if stage_done:
                counters.stage += 1
                counters.epoch = 0
            if stage_done or counters.epoch % recipe.save_every_epochs == 0:
                _save_last(model, optimizer, counters, recipe, last_dir, info)
            if info.is_main and validating:
                plot_curves(metrics_path, out_dir / "curves.png")
            if stage_done:
                break
    if info.is_main and val_loader is None:
        save_checkpoint(model, best_dir, extra={"step": counters.step, "val": None})
    return {"counters": counters.as_dict(), "val": last_val, "out_dir": str(out_dir)}


def _format_val(metrics: dict[str, Any], epoch: int) -> str:
    parts = [f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float)]
    return f"val epoch {epoch}: " + ", ".join(parts)


def _save_last(
    model, optimizer, counters: Counters, recipe: RecipeConfig, last_dir: Path, info: DistInfo
) -> None:
    if info.is_main:
        save_training_state(
            last_dir,
            model,
            optimizer,
            counters.as_dict(),
            extra={"recipe": to_dict(recipe), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")},
        )
    barrier(info)
