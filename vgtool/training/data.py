"""Training batches: decode, augment, resize; tokenise phrases and build targets in the collate.

Every random choice of a sample is drawn from a generator seeded by (seed, epoch, sample index),
so batches are identical whatever the number of workers, and a resumed run sees the same data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from vgtool import box_ops
from vgtool.data.decode import ImageDecodeError, load_rgb
from vgtool.data.preprocess import PreprocessConfig, resize_to_input
from vgtool.data.tokenize import PhraseTokenizer
from vgtool.datasets.sample import GroundingSample
from vgtool.errors import InputError
from vgtool.training.augment import AugmentConfig, augment


@dataclass
class TrainBatch:
    """A collated training batch.

    Attributes:
        indices: ``[B]`` sample indices in the dataset.
        pixels: ``[B, 3, S, S]`` uint8 (normalised on the device).
        input_ids, attention_mask: ``[B, T]`` tokenised phrases.
        targets: per sample ``{"boxes": [n_i, 4] cxcywh in [0, 1]}`` (n_i may be 0).
        phrases: the (augmented) phrases, for per-phrase caches.
    """

    indices: torch.Tensor
    pixels: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    phrases: list[str]

    def to(self, device: torch.device) -> TrainBatch:
        return TrainBatch(
            indices=self.indices,
            pixels=self.pixels.to(device, non_blocking=True),
            input_ids=self.input_ids.to(device, non_blocking=True),
            attention_mask=self.attention_mask.to(device, non_blocking=True),
            targets=[{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in self.targets],
            phrases=self.phrases,
        )


class GroundingTrainDataset(Dataset):
    """Samples -> ``(index, pixels uint8 [3, S, S], boxes cxcywh [n, 4] in [0, 1], phrase)``."""

    def __init__(
        self,
        samples: Sequence[GroundingSample],
        preprocess: PreprocessConfig,
        augment_config: AugmentConfig | None = None,
        seed: int = 0,
    ):
        self.samples = list(samples)
        self.preprocess = preprocess
        self.augment_config = augment_config
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        try:
            image = load_rgb(sample.image_path)
        except ImageDecodeError as err:
            raise InputError(f"{sample.image_path}: {err}") from err
        boxes_xyxy, phrase = sample.boxes_xyxy, sample.phrase
        if self.augment_config is not None and self.augment_config.enabled:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, boxes_xyxy, phrase = augment(image, boxes_xyxy, phrase, rng, self.augment_config)
        boxes = torch.as_tensor(boxes_xyxy, dtype=torch.float32).reshape(-1, 4)
        boxes_cxcywh = box_ops.xyxy_to_cxcywh(box_ops.normalize_pixels(boxes, image.width, image.height))
        return index, resize_to_input(image, self.preprocess), boxes_cxcywh.clamp(0, 1), phrase


class TrainCollate:
    """Stacks images and tokenises phrases (tokenisation lives here, in the data path)."""

    def __init__(self, tokenizer: PhraseTokenizer):
        self.tokenizer = tokenizer

    def __call__(self, items) -> TrainBatch:
        indices, pixels, boxes, phrases = zip(*items, strict=True)
        tokens = self.tokenizer(list(phrases))
        return TrainBatch(
            indices=torch.tensor(indices),
            pixels=torch.stack(pixels),
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            targets=[{"boxes": b} for b in boxes],
            phrases=list(phrases),
        )


def epoch_order(num_samples: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """This rank's sample order for an epoch: a seeded permutation, dealt round-robin to ranks and
    padded by wrapping so every rank gets the same number of samples."""
    order = np.random.default_rng([seed, epoch, 7919]).permutation(num_samples).tolist()
    if world_size > 1:
        per_rank = -(-num_samples // world_size)
        order = (order * 2)[: per_rank * world_size]
        order = order[rank::world_size]
    return order
