"""Training from cached frozen-encoder features gives the same loss as running the encoders."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from vgtool.data.decode import load_rgb
from vgtool.data.preprocess import PreprocessConfig, normalize, resize_to_input
from vgtool.data.tokenize import PhraseTokenizer
from vgtool.datasets.registry import DataConfig, load_samples
from vgtool.models.presets import config_from_preset
from vgtool.models.text import load_tokenizer
from vgtool.models.vlgtr import build_model
from vgtool.training.augment import AugmentConfig, augment, flip_allowed, phrase_variants
from vgtool.training.criterion import LossConfig, SetCriterion
from vgtool.training.data import GroundingTrainDataset, TrainCollate
from vgtool.training.feature_cache import ImageFeatureCache, TextFeatureCache, image_cache_blocker

CPU = torch.device("cpu")
FLIPS = AugmentConfig(hflip=0.5, random_resized_crop=0.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from vgtool.synth import generate_dataset

    root = tmp_path_factory.mktemp("cache")
    generate_dataset(root, 4, seed=8, image_size=(96, 80), splits=(("train", 1.0),), phrases_per_image=3)
    config = config_from_preset("vlgtr-tiny")
    config = replace(
        config, vision=replace(config.vision, frozen=True), text=replace(config.text, frozen=True)
    )
    torch.manual_seed(0)
    model = build_model(config).train()
    tokenizer = PhraseTokenizer(load_tokenizer(config.text), config.text.max_length)
    preprocess = PreprocessConfig.from_model(model)
    samples = load_samples(DataConfig(format="coco", path=str(root), split="train"))
    assert len({s.image_path for s in samples}) < len(samples)  # images shared by several phrases
    return model, tokenizer, preprocess, samples


def _batch(setup, augment_config=None, epoch=0):
    _, tokenizer, preprocess, samples = setup
    dataset = GroundingTrainDataset(samples, preprocess, augment_config, seed=1)
    dataset.set_epoch(epoch)
    return TrainCollate(tokenizer)([dataset[i] for i in range(len(samples))])


def _loss(model, batch, **features):
    if "image_features" in features:  # one feature map per row
        pixels = None
    else:  # one image per distinct backbone input
        pixels = normalize(batch.pixels, PreprocessConfig.from_model(model))
        features["image_index"] = batch.image_index
    outputs = model(pixels, batch.input_ids, batch.attention_mask, **features)
    return SetCriterion(LossConfig())(outputs, batch.targets)["loss"]


def _cache_call(cache, batch, preprocess):
    return cache(
        batch.image_keys, normalize(batch.pixels, preprocess), batch.pixel_rows.tolist(), batch.image_sizes
    )


def _count_encodes(model, monkeypatch) -> list[int]:
    """Rows the backbone encodes, per call."""
    calls: list[int] = []
    encode = model.encode_image_features

    def counting(pixels):
        calls.append(len(pixels))
        return encode(pixels)

    monkeypatch.setattr(model, "encode_image_features", counting)
    return calls


def test_text_cache_gives_the_same_loss(setup):
    model, tokenizer, preprocess, _ = setup
    batch = _batch(setup)
    direct = _loss(model, batch)
    cache = TextFeatureCache(model, tokenizer, CPU, torch.float32)
    features, mask = cache(batch.phrases)
    pixels = normalize(batch.pixels, preprocess)
    criterion = SetCriterion(LossConfig())
    index = batch.image_index
    cached = criterion(model(pixels, None, mask, text_features=features, image_index=index), batch.targets)
    features_again, mask_again = cache(batch.phrases)
    again = criterion(
        model(pixels, None, mask_again, text_features=features_again, image_index=index), batch.targets
    )
    cached, again = cached["loss"], again["loss"]
    assert torch.allclose(direct, cached, atol=1e-5) and torch.allclose(cached, again)
    assert cache.misses == len(set(batch.phrases))  # each distinct phrase encoded once


def test_text_features_do_not_depend_on_the_phrases_encoded_with_them(setup, monkeypatch):
    model, tokenizer, _, samples = setup
    monkeypatch.setattr(TextFeatureCache, "BATCH", 3)  # several batches of unequal lengths
    phrases = [v for s in samples for v in phrase_variants(s.phrase, FLIPS)]
    assert len(set(phrases)) > len({s.phrase for s in samples})  # some phrases have a mirror image
    forward, backward = (TextFeatureCache(model, tokenizer, CPU, torch.float32) for _ in range(2))
    assert forward.prefill(phrases) == backward.prefill(phrases[::-1]) == len(set(phrases))
    assert forward.prefill(phrases) == 0  # nothing left to encode
    lazy = TextFeatureCache(model, tokenizer, CPU, torch.float32)
    lazy(phrases)  # not prefilled: each phrase encoded on its own
    assert lazy.misses == len(set(phrases))
    for phrase in set(phrases):
        assert torch.equal(forward.store[phrase], backward.store[phrase])  # bit for bit
        assert lazy.store[phrase].shape == forward.store[phrase].shape  # unpadded
        assert torch.allclose(lazy.store[phrase], forward.store[phrase], atol=1e-5)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.float16, 2e-3)])
@pytest.mark.parametrize("augment_config", [None, FLIPS, AugmentConfig(hflip=1.0, random_resized_crop=0.0)])
def test_cached_and_uncached_give_the_same_loss_on_the_same_batch(setup, dtype, tolerance, augment_config):
    model, _, preprocess, _ = setup
    batch = _batch(setup, augment_config)
    direct = _loss(model, batch)
    cache = ImageFeatureCache(model, CPU, dtype)
    filling = _loss(model, batch, image_features=_cache_call(cache, batch, preprocess))
    served = _loss(
        model, batch, image_features=cache(batch.image_keys, batch.pixels[:0].float(), [], batch.image_sizes)
    )
    assert torch.allclose(direct, filling, rtol=tolerance, atol=tolerance)
    assert torch.equal(filling, served)


def test_backbone_encodes_each_image_and_flip_once(setup, monkeypatch):
    model, _, preprocess, _ = setup
    calls = _count_encodes(model, monkeypatch)
    cache = ImageFeatureCache(model, CPU)
    first = _batch(setup, FLIPS, epoch=0)
    _cache_call(cache, first, preprocess)
    assert calls == [len(set(first.image_keys))] and cache.misses == len(set(first.image_keys))
    assert len(set(first.image_keys)) < len(first.image_keys)  # phrases of one image shared an entry
    _cache_call(cache, first, preprocess)
    assert len(calls) == 1  # nothing new: the backbone is not called at all
    second = _batch(setup, FLIPS, epoch=1)  # other flips: only (image, mirrored) pairs not seen yet
    _cache_call(cache, second, preprocess)
    new = set(second.image_keys) - set(first.image_keys)
    assert calls[1:] == ([len(new)] if new else [])
    assert cache.hits == 2 * len(first.image_keys) + len(second.image_keys) - len(new) - len(
        set(first.image_keys)
    )


def test_mirrored_images_are_cached_apart(setup):
    model, _, preprocess, _ = setup
    plain, mirrored = _batch(setup, None), _batch(setup, AugmentConfig(hflip=1.0, random_resized_crop=0.0))
    flipped_rows = [i for i, key in enumerate(mirrored.image_keys) if key[1]]
    assert flipped_rows  # phrases with "east"/"clockwise" are never flipped, the rest always are
    cache = ImageFeatureCache(model, CPU, torch.float32)
    _cache_call(cache, plain, preprocess)
    features = _cache_call(cache, mirrored, preprocess)
    with torch.no_grad():
        expected = model.encode_image_features(normalize(mirrored.pixels, preprocess))[mirrored.image_index]
        unflipped = model.encode_image_features(normalize(plain.pixels, preprocess))[plain.image_index]
    assert torch.allclose(features, expected, atol=1e-5)
    assert not torch.allclose(features[flipped_rows], unflipped[flipped_rows], atol=1e-3)


def test_an_image_neither_cached_nor_decoded_is_an_error(setup):
    model = setup[0]
    batch = _batch(setup)
    with pytest.raises(ValueError, match="not cached and the image was not decoded"):
        ImageFeatureCache(model, CPU)(batch.image_keys, batch.pixels[:0].float(), [], batch.image_sizes)


def test_on_disk_store_is_found_again_without_encoding(setup, tmp_path, monkeypatch):
    model, _, preprocess, _ = setup
    batch = _batch(setup, FLIPS)
    memory = _cache_call(ImageFeatureCache(model, CPU), batch, preprocess)
    on_disk = _cache_call(ImageFeatureCache(model, CPU, directory=tmp_path), batch, preprocess)
    assert torch.equal(memory, on_disk)
    calls = _count_encodes(model, monkeypatch)
    reopened = ImageFeatureCache(model, CPU, directory=tmp_path)
    assert reopened.sizes == dict(zip(batch.image_keys, batch.image_sizes, strict=True))
    again = reopened(batch.image_keys, batch.pixels[:0].float(), [], batch.image_sizes)
    assert torch.equal(again, memory) and calls == []
    assert not any(tmp_path.glob("*.tmp*")) and all(p.suffix == ".safetensors" for p in tmp_path.iterdir())


@pytest.mark.parametrize("augment_config", [None, FLIPS, AugmentConfig(hflip=1.0, random_resized_crop=0.0)])
def test_dataset_skips_decoding_cached_images_and_gives_the_same_targets(setup, augment_config, monkeypatch):
    _, _, preprocess, samples = setup
    dataset = GroundingTrainDataset(samples, preprocess, augment_config, seed=1)
    dataset.set_epoch(3)
    decoded = [dataset[i] for i in range(len(samples))]
    dataset.cached_sizes = {item.image_key: item.image_size for item in decoded}

    def no_decoding(path):
        raise AssertionError(f"{path} decoded although its features are cached")

    monkeypatch.setattr("vgtool.training.data.load_rgb", no_decoding)
    for item, skipped in zip(decoded, (dataset[i] for i in range(len(samples))), strict=True):
        assert skipped.pixels is None and item.pixels is not None
        assert torch.equal(skipped.boxes_cxcywh, item.boxes_cxcywh)
        assert (skipped.phrase, skipped.image_key, skipped.image_size) == (
            item.phrase,
            item.image_key,
            item.image_size,
        )


@pytest.mark.parametrize("hflip", [0.0, 0.5, 1.0])
def test_flip_only_samples_match_augment(setup, hflip):
    """The dataset draws the flip before decoding; samples must equal those of ``augment()``."""
    _, _, preprocess, samples = setup
    config = AugmentConfig(hflip=hflip, random_resized_crop=0.0)
    dataset = GroundingTrainDataset(samples, preprocess, config, seed=4)
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        for index, sample in enumerate(samples):
            item = dataset[index]
            rng = np.random.default_rng([4, epoch, 1, dataset.image_numbers[index]])  # per image
            image, boxes_xyxy, phrase = augment(
                load_rgb(sample.image_path), sample.boxes_xyxy, sample.phrase, rng, config
            )
            assert torch.equal(item.pixels, resize_to_input(image, preprocess))
            assert item.phrase == phrase and item.image_key == (str(sample.image_path), item.image_key[1])
            if hflip in (0.0, 1.0):
                assert item.image_key[1] == (hflip == 1.0 and flip_allowed(sample.phrase))
            expected = torch.as_tensor(boxes_xyxy) / torch.tensor([image.width, image.height] * 2)
            assert torch.allclose(
                item.boxes_cxcywh[:, :2], (expected[:, :2] + expected[:, 2:]) / 2, atol=1e-6
            )


@pytest.mark.parametrize(
    ("enabled", "vision_frozen", "augment_config", "blocker"),
    [
        (True, True, AugmentConfig(hflip=0.5, random_resized_crop=0.0), None),
        (True, True, AugmentConfig(hflip=0.0, random_resized_crop=0.0), None),
        (True, True, None, None),
        (True, True, AugmentConfig(random_resized_crop=0.5, enabled=False), None),
        (False, True, AugmentConfig(hflip=0.0, random_resized_crop=0.0), "cache_features is off"),
        (True, False, AugmentConfig(hflip=0.0, random_resized_crop=0.0), "vision backbone is trained"),
        (True, True, AugmentConfig(hflip=0.0, random_resized_crop=0.5), "crops or colour-jitters"),
        (True, True, AugmentConfig(hflip=0.0, random_resized_crop=0.0, color_jitter=0.2), "crops or colour"),
    ],
)
def test_when_image_features_can_be_cached(enabled, vision_frozen, augment_config, blocker):
    reason = image_cache_blocker(enabled, vision_frozen, augment_config)
    assert reason is None if blocker is None else blocker in reason
