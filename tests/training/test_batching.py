"""Batches that share images: the grouped epoch order, the per-image flip and the collate."""

from __future__ import annotations

import itertools

import pytest
import torch

from vgtool.data.preprocess import PreprocessConfig
from vgtool.data.tokenize import PhraseTokenizer
from vgtool.datasets.registry import DataConfig, load_samples
from vgtool.models.presets import config_from_preset
from vgtool.models.text import load_tokenizer
from vgtool.training.augment import AugmentConfig
from vgtool.training.data import GroundingTrainDataset, TrainCollate, epoch_order, grouped_epoch_order

IMAGES = [0, 0, 0, 1, 2, 2, 3, 3, 3, 3, 4]  # image number of each sample


def _runs(numbers):
    return [key for key, _ in itertools.groupby(numbers)]


@pytest.mark.parametrize("epoch", [0, 1, 5])
def test_grouped_order_shuffles_images_and_keeps_their_samples_together(epoch):
    order = grouped_epoch_order(IMAGES, seed=3, epoch=epoch)
    assert sorted(order) == list(range(len(IMAGES)))
    runs = _runs([IMAGES[i] for i in order])
    assert sorted(runs) == sorted(set(IMAGES))  # each image appears as one run
    assert order == grouped_epoch_order(IMAGES, seed=3, epoch=epoch)


def test_grouped_order_changes_with_the_epoch():
    orders = {tuple(grouped_epoch_order(IMAGES, seed=0, epoch=e)) for e in range(6)}
    assert len(orders) > 1


def test_grouped_order_gives_ranks_equal_contiguous_slices():
    world = 3
    parts = [grouped_epoch_order(IMAGES, 0, 2, rank, world) for rank in range(world)]
    assert {len(p) for p in parts} == {len(epoch_order(len(IMAGES), 0, 2, 0, world))}
    whole = grouped_epoch_order(IMAGES, 0, 2)
    assert list(itertools.chain(*parts))[: len(whole)] == whole  # padded by wrapping at the end


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    from vgtool.synth import generate_dataset

    root = tmp_path_factory.mktemp("batching")
    generate_dataset(root, 5, seed=11, image_size=(80, 64), splits=(("train", 1.0),), phrases_per_image=3)
    return load_samples(DataConfig(format="coco", path=str(root), split="train"))


def _dataset(samples, augment_config, epoch=0):
    config = config_from_preset("vlgtr-tiny")
    dataset = GroundingTrainDataset(
        samples, PreprocessConfig(image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3), augment_config, seed=2
    )
    dataset.set_epoch(epoch)
    return dataset, PhraseTokenizer(load_tokenizer(config.text), config.text.max_length)


@pytest.mark.parametrize("epoch", range(4))
def test_the_flip_is_drawn_once_per_image_and_epoch(samples, epoch):
    dataset, _ = _dataset(samples, AugmentConfig(hflip=0.5, random_resized_crop=0.0), epoch)
    flips: dict[str, set[bool]] = {}
    for index in range(len(samples)):
        path, mirrored = dataset[index].image_key
        flips.setdefault(path, set()).add(mirrored)
    assert all(len(v) == 1 for v in flips.values())  # all phrases of an image: the same input


def test_the_flip_varies_between_images_and_epochs(samples):
    seen = set()
    for epoch in range(4):
        dataset, _ = _dataset(samples, AugmentConfig(hflip=0.5, random_resized_crop=0.0), epoch)
        seen |= {dataset[i].image_key[1] for i in range(len(samples))}
    assert seen == {False, True}


@pytest.mark.parametrize(
    "augment_config",
    [
        None,
        AugmentConfig(hflip=0.5, random_resized_crop=0.0),
        AugmentConfig(hflip=0.5, random_resized_crop=0.5),
    ],
    ids=["none", "flips", "crops"],
)
def test_collate_keeps_one_image_per_backbone_input(samples, augment_config):
    dataset, tokenizer = _dataset(samples, augment_config)
    order = grouped_epoch_order(dataset.image_numbers, 0, 0)
    items = [dataset[i] for i in order[:7]]
    batch = TrainCollate(tokenizer)(items)
    assert batch.image_index.shape == (7,) and len(batch.pixels) == len(batch.pixel_rows)
    for row, item in enumerate(items):  # each row's image is its own pixels
        assert torch.equal(batch.pixels[batch.image_index[row]], item.pixels)
    keys = [item.image_key for item in items]
    if augment_config is not None and augment_config.random_resized_crop:  # every crop is new
        assert keys == [None] * 7 and len(batch.pixels) == 7
    else:
        assert len(batch.pixels) == len(set(keys)) < 7
        assert [keys[r] for r in batch.pixel_rows.tolist()] == list(dict.fromkeys(keys))


def test_collate_marks_rows_without_pixels(samples):
    dataset, tokenizer = _dataset(samples, None)
    first = dataset[0]
    dataset.cached_sizes = {first.image_key: first.image_size}
    items = [dataset[i] for i in range(len(samples))]
    batch = TrainCollate(tokenizer)(items)
    cached = [row for row, item in enumerate(items) if item.image_key == first.image_key]
    assert cached and all(items[row].pixels is None for row in cached)
    assert all(batch.image_index[row] == -1 for row in cached)
    assert all(batch.image_index[row] >= 0 for row in range(len(items)) if row not in cached)
