"""Training batches: decode, augment, resize; tokenise phrases and build targets in the collate.

Every random choice of a sample is drawn from a generator seeded by (seed, epoch, sample index),
so batches are identical whatever the number of workers, and a resumed run sees the same data.

When augmentation at most mirrors the image, each sample also names its backbone input as an
:data:`~vgtool.training.feature_cache.ImageKey` ``(image path, mirrored)``. The flip is then drawn
per image and epoch (seeded by (seed, epoch, image number)), so all phrases of an image share one
backbone input, and before decoding, so an image whose features are cached
(``GroundingTrainDataset.cached_sizes``) is not decoded at all; its boxes and phrase come out
exactly as if it had been. The collate keeps one copy of each backbone input per batch, and
:func:`grouped_epoch_order` puts an image's phrases next to each other, so they share a batch and
one backbone pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vgtool import box_ops
from vgtool.data.decode import ImageDecodeError, load_rgb
from vgtool.data.preprocess import PreprocessConfig, resize_to_input
from vgtool.data.tokenize import PhraseTokenizer
from vgtool.datasets.sample import GroundingSample
from vgtool.errors import InputError
from vgtool.training.augment import AugmentConfig, augment, draw_flip, flip_targets, only_mirrors
from vgtool.training.feature_cache import ImageKey


@dataclass
class TrainBatch:
    """A collated training batch.

    Attributes:
        indices: ``[B]`` sample indices in the dataset.
        pixels: ``[M, 3, S, S]`` uint8 (normalised on the device): the batch's distinct backbone
            inputs, of the rows ``pixel_rows``. Rows with the same image key share one image, and
            rows whose features are cached (the dataset skipped decoding them) have none.
        pixel_rows: ``[M]`` the first batch row of each image in ``pixels`` (kept on the CPU).
        image_index: ``[B]`` each row's image in ``pixels``, -1 for a row without one (cached).
        input_ids, attention_mask: ``[B, T]`` tokenised phrases.
        targets: per sample ``{"boxes": [n_i, 4] cxcywh in [0, 1]}`` (n_i may be 0).
        phrases: the (augmented) phrases, for per-phrase caches.
        image_keys: per sample ``(image path, mirrored)``, or None where augmentation does more
            than mirror (see :class:`TrainItem`).
        image_sizes: per sample ``TrainItem.image_size``.
    """

    indices: torch.Tensor
    pixels: torch.Tensor
    pixel_rows: torch.Tensor
    image_index: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    phrases: list[str]
    image_keys: list[ImageKey | None]
    image_sizes: list[tuple[int, int]]

    def to(self, device: torch.device) -> TrainBatch:
        return replace(
            self,
            pixels=self.pixels.to(device, non_blocking=True),
            image_index=self.image_index.to(device, non_blocking=True),
            input_ids=self.input_ids.to(device, non_blocking=True),
            attention_mask=self.attention_mask.to(device, non_blocking=True),
            targets=[{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in self.targets],
        )


class TrainItem(NamedTuple):
    """One sample as :class:`GroundingTrainDataset` returns it.

    Attributes:
        index: the sample's index in the dataset.
        pixels: ``[3, S, S]`` uint8, or None when the image was not decoded (its features are cached).
        boxes_cxcywh: ``[n, 4]`` in [0, 1] of the (augmented) image.
        phrase: the (augmented) phrase.
        image_key: ``(image path, mirrored)``, the backbone input, when augmentation at most mirrors
            the image; None when it crops or jitters (the input is then new every time).
        image_size: ``(width, height)`` of the (augmented) image before resizing; for a keyed
            sample, the displayed size of its image file.
    """

    index: int
    pixels: torch.Tensor | None
    boxes_cxcywh: torch.Tensor
    phrase: str
    image_key: ImageKey | None
    image_size: tuple[int, int]


class GroundingTrainDataset(Dataset):
    """Samples -> :class:`TrainItem` (decoded, augmented, resized).

    Attributes:
        cached_sizes: ``(image path, mirrored)`` -> displayed ``(width, height)`` of the images
            whose backbone features are cached; those are not decoded (``TrainItem.pixels`` is None).
            None (the default) decodes every image. The trainer passes its cache's live mapping;
            worker processes see it as it was when the epoch's loader started.
    """

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
        numbers: dict[str, int] = {}
        self.image_numbers = [numbers.setdefault(str(s.image_path), len(numbers)) for s in self.samples]
        self.cached_sizes: Mapping[ImageKey, tuple[int, int]] | None = None
        self._last: tuple[ImageKey, torch.Tensor, tuple[int, int]] | None = None  # see __getitem__

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._last = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> TrainItem:
        sample = self.samples[index]
        config = self.augment_config
        augmenting = config is not None and config.enabled
        if not only_mirrors(config):  # per-sample draws
            rng = np.random.default_rng([self.seed, self.epoch, index]) if augmenting else None
            image = _decode(sample)
            image, boxes_xyxy, phrase = augment(image, sample.boxes_xyxy, sample.phrase, rng, config)
            return self._item(index, image, boxes_xyxy, phrase, None, image.size)
        # At most a flip: drawn per image (all its phrases share one backbone input) and before
        # decoding, so a cached image need not be decoded.
        mirrored = augmenting and draw_flip(
            sample.phrase,
            np.random.default_rng([self.seed, self.epoch, 1, self.image_numbers[index]]),
            config,
        )
        key = (str(sample.image_path), mirrored)
        size = self.cached_sizes.get(key) if self.cached_sizes is not None else None
        image = None
        if size is None and self._last is not None and self._last[0] == key:
            # The previous sample's image (grouped orders put an image's phrases next to each other).
            pixels, size = self._last[1], self._last[2]
            boxes_xyxy, phrase = self._flipped_targets(sample, size, mirrored, augmenting)
            return self._item(index, None, boxes_xyxy, phrase, key, size, pixels=pixels)
        if size is None:
            image = _decode(sample)
            size = image.size
            if mirrored:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        boxes_xyxy, phrase = self._flipped_targets(sample, size, mirrored, augmenting)
        item = self._item(index, image, boxes_xyxy, phrase, key, size)
        if item.pixels is not None:
            self._last = (key, item.pixels, size)
        return item

    @staticmethod
    def _flipped_targets(sample, size, mirrored: bool, augmenting: bool) -> tuple[torch.Tensor, str]:
        boxes_xyxy, phrase = torch.as_tensor(sample.boxes_xyxy).reshape(-1, 4), sample.phrase
        if augmenting:
            boxes_xyxy = box_ops.clip_xyxy(boxes_xyxy, *size)
            if mirrored:
                boxes_xyxy, phrase = flip_targets(boxes_xyxy, phrase, size[0])
        return boxes_xyxy, phrase

    def _item(self, index, image, boxes_xyxy, phrase, key, size, pixels=None) -> TrainItem:
        width, height = size
        boxes = torch.as_tensor(boxes_xyxy, dtype=torch.float32).reshape(-1, 4)
        boxes_cxcywh = box_ops.xyxy_to_cxcywh(box_ops.normalize_pixels(boxes, width, height)).clamp(0, 1)
        if image is not None:
            pixels = resize_to_input(image, self.preprocess)
        return TrainItem(index, pixels, boxes_cxcywh, phrase, key, (int(width), int(height)))


def _decode(sample: GroundingSample) -> Image.Image:
    try:
        return load_rgb(sample.image_path)
    except ImageDecodeError as err:
        raise InputError(f"{sample.image_path}: {err}") from err


class TrainCollate:
    """Stacks images and tokenises phrases (tokenisation lives here, in the data path)."""

    def __init__(self, tokenizer: PhraseTokenizer):
        self.tokenizer = tokenizer

    def __call__(self, items: Sequence[TrainItem]) -> TrainBatch:
        rows: list[int] = []  # the batch rows whose pixels are kept: one per distinct image
        first: dict[ImageKey, int] = {}  # image key -> its image's index in rows
        image_index = []
        for i, item in enumerate(items):
            if item.image_key is not None and item.image_key in first:
                image_index.append(first[item.image_key])
            elif item.pixels is not None:
                if item.image_key is not None:
                    first[item.image_key] = len(rows)
                image_index.append(len(rows))
                rows.append(i)
            else:
                image_index.append(-1)
        pixels = (
            torch.stack([items[i].pixels for i in rows])
            if rows
            else torch.zeros((0, 3, 0, 0), dtype=torch.uint8)
        )
        tokens = self.tokenizer([item.phrase for item in items])
        return TrainBatch(
            indices=torch.tensor([item.index for item in items]),
            pixels=pixels,
            pixel_rows=torch.tensor(rows, dtype=torch.long),
            image_index=torch.tensor(image_index, dtype=torch.long),
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            targets=[{"boxes": item.boxes_cxcywh} for item in items],
            phrases=[item.phrase for item in items],
            image_keys=[item.image_key for item in items],
            image_sizes=[item.image_size for item in items],
        )


def epoch_order(num_samples: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """This rank's sample order for an epoch: a seeded permutation, dealt round-robin to ranks and
    padded by wrapping so every rank gets the same number of samples."""
    order = np.random.default_rng([seed, epoch, 7919]).permutation(num_samples).tolist()
    return _rank_share(order, rank, world_size, contiguous=False)


def _rank_share(order: list[int], rank: int, world_size: int, contiguous: bool) -> list[int]:
    """This rank's part of an epoch's order, padded by wrapping so every rank gets as many samples:
    every ``world_size``-th sample, or with ``contiguous`` one slice (keeps neighbours together)."""
    if world_size == 1:
        return order
    per_rank = -(-len(order) // world_size)
    order = (order * 2)[: per_rank * world_size]
    return order[rank * per_rank : (rank + 1) * per_rank] if contiguous else order[rank::world_size]


def grouped_epoch_order(
    image_numbers: Sequence[int], seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> list[int]:
    """Like :func:`epoch_order`, but each image's samples stay together (in dataset order): the
    images are shuffled, not the samples, so an image's phrases share a batch and a backbone pass.
    Ranks get contiguous slices (padded by wrapping to equal length)."""
    by_image: dict[int, list[int]] = {}
    for index, number in enumerate(image_numbers):
        by_image.setdefault(number, []).append(index)
    groups = list(by_image.values())
    permutation = np.random.default_rng([seed, epoch, 7919]).permutation(len(groups))
    order = [index for g in permutation for index in groups[g]]
    return _rank_share(order, rank, world_size, contiguous=True)
