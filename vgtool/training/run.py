"""What the steps of a training run share: its settings and folder, and its data.

:func:`~vgtool.training.trainer.train` builds one :class:`Run` and one :class:`TrainData` and hands
them to each step (:mod:`vgtool.training.stage`, :mod:`vgtool.training.engine`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from vgtool.data.preprocess import PreprocessConfig
from vgtool.data.tokenize import PhraseTokenizer
from vgtool.training.config import RecipeConfig
from vgtool.training.data import GroundingTrainDataset, TrainCollate, epoch_order, grouped_epoch_order
from vgtool.training.distributed import DistInfo


@dataclass(frozen=True)
class Run:
    """The settings and places fixed for the whole run.

    Attributes:
        recipe: the resolved recipe.
        out_dir: the run folder (see :mod:`vgtool.training.trainer`).
        info: this process's rank in data-parallel training.
        device: where this process trains.
        bf16: train under bf16 autocast.
        quiet: no progress bars.
        on_step: called with the global step after every optimizer step (and any save).
    """

    recipe: RecipeConfig
    out_dir: Path
    info: DistInfo
    device: torch.device
    bf16: bool
    quiet: bool = False
    on_step: Callable[[int], None] | None = None

    @property
    def last_dir(self) -> Path:
        return self.out_dir / "last"

    @property
    def best_dir(self) -> Path:
        return self.out_dir / "best"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    def log(self, record: dict[str, Any]) -> None:
        """Append one line to ``metrics.jsonl`` (the main process only)."""
        if self.info.is_main:
            with open(self.metrics_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")


@dataclass(frozen=True)
class TrainData:
    """The training set and its batching, and the validation loader.

    Attributes:
        preprocess: how images become the model's input.
        tokenizer: the text encoder's tokenizer (the collate's, and the text-feature cache's).
        dataset: the training samples (``dataset.samples``) as model inputs and targets.
        collate: batches the dataset's items.
        val_loader: the validation batches; None without validation data, and on all but the
            main process.
        grouped: epochs keep each image's samples together (see :func:`grouped_epoch_order`).
    """

    preprocess: PreprocessConfig
    tokenizer: PhraseTokenizer
    dataset: GroundingTrainDataset
    collate: TrainCollate
    val_loader: DataLoader | None
    grouped: bool

    def order(self, epoch: int, info: DistInfo) -> list[int]:
        """This process's sample order for the (global, 0-based) ``epoch``."""
        seed = self.dataset.seed
        if self.grouped:
            return grouped_epoch_order(self.dataset.image_numbers, seed, epoch, info.rank, info.world_size)
        return epoch_order(len(self.dataset), seed, epoch, info.rank, info.world_size)
