"""Training from cached frozen-encoder features gives the same loss as running the encoders."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from vgtool.data.preprocess import PreprocessConfig, normalize
from vgtool.data.tokenize import PhraseTokenizer
from vgtool.datasets.registry import DataConfig, load_samples
from vgtool.models.init import config_from_preset
from vgtool.models.text import load_tokenizer
from vgtool.models.vlgtr import build_model
from vgtool.training.criterion import LossConfig, SetCriterion
from vgtool.training.data import GroundingTrainDataset, TrainCollate
from vgtool.training.feature_cache import ImageFeatureCache, TextFeatureCache


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from vgtool.synth import generate_dataset

    root = tmp_path_factory.mktemp("cache")
    generate_dataset(root, 4, seed=8, image_size=(96, 96), splits=(("train", 1.0),))
    config = config_from_preset("vlgtr-tiny")
    config = replace(
        config, vision=replace(config.vision, frozen=True), text=replace(config.text, frozen=True)
    )
    torch.manual_seed(0)
    model = build_model(config).train()
    tokenizer = PhraseTokenizer(load_tokenizer(config.text), config.text.max_length)
    preprocess = PreprocessConfig.from_model(model)
    samples = load_samples(DataConfig(format="coco", path=str(root), split="train"))[:6]
    dataset = GroundingTrainDataset(samples, preprocess, None)
    batch = TrainCollate(tokenizer)([dataset[i] for i in range(len(samples))])
    return model, tokenizer, preprocess, batch


def test_text_cache_gives_the_same_loss(setup):
    model, tokenizer, preprocess, batch = setup
    criterion = SetCriterion(LossConfig())
    pixels = normalize(batch.pixels, preprocess)
    direct = criterion(model(pixels, batch.input_ids, batch.attention_mask), batch.targets)["loss"]
    cache = TextFeatureCache(model, tokenizer, torch.device("cpu"), torch.float32)
    features, mask = cache(batch.phrases)
    cached = criterion(model(pixels, None, mask, text_features=features), batch.targets)["loss"]
    features_again, mask_again = cache(batch.phrases)
    again = criterion(model(pixels, None, mask_again, text_features=features_again), batch.targets)["loss"]
    assert torch.allclose(direct, cached, atol=1e-5) and torch.allclose(cached, again)
    assert cache.misses == len(set(batch.phrases))  # each distinct phrase encoded once


def test_image_cache_gives_the_same_loss_within_fp16(setup):
    model, _, preprocess, batch = setup
    criterion = SetCriterion(LossConfig())
    pixels = normalize(batch.pixels, preprocess)
    direct = criterion(model(pixels, batch.input_ids, batch.attention_mask), batch.targets)["loss"]
    cache = ImageFeatureCache(model, torch.device("cpu"))
    cache(batch.indices.tolist(), pixels)
    assert cache.has_all(batch.indices.tolist())
    features = cache(batch.indices.tolist(), None)  # served from the cache alone
    cached = criterion(
        model(None, batch.input_ids, batch.attention_mask, image_features=features), batch.targets
    )["loss"]
    assert torch.allclose(direct, cached, rtol=1e-2, atol=1e-2)
