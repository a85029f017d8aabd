"""The fusion single-box model: outputs and box formats, the packed image features, CLIP's towers
and tokenizer against open_clip's own, the seed preset's shapes and counts, configs, checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from vgtool import box_ops
from vgtool.checkpoint import export_checkpoint, load_checkpoint, referenced_parts, save_checkpoint
from vgtool.config import to_dict
from vgtool.errors import ConfigError, ModelSourceError
from vgtool.models.build import build_model, is_single_box
from vgtool.models.config import OBJECT, ModelConfig, model_config_dict
from vgtool.models.fusion import FusionModel
from vgtool.models.fusion_config import FusionConfig
from vgtool.models.fusion_vision import pack_embedding, unpack_embedding
from vgtool.models.presets import TINY_CLIP, TINY_TEXT, config_from_preset, get_preset
from vgtool.models.text import load_tokenizer, phrase_tokenizer
from vgtool.torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()  # open_clip imports torchvision
pytest.importorskip("open_clip")

PHRASES = ["the red circle", "a blue square on the left of the green star", "star"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    config = config_from_preset("fusion-tiny")
    return build_model(config).eval(), phrase_tokenizer(config.text)


def test_one_box_per_pair_in_cxcywh_inside_the_image_and_a_confidence(tiny):
    model, tokenizer = tiny
    tokens = tokenizer(PHRASES)
    with torch.no_grad():
        image = model.encode_image(torch.randn(2, 3, 64, 64))
        text = model.encode_text(tokens["input_ids"], tokens["attention_mask"])
        image_index, text_index = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1, 2, 0, 2])
        out = model.decode(image, text, image_index, text_index)
    assert isinstance(model, FusionModel) and is_single_box(model.config)
    assert out["pred_boxes"].shape == (5, 1, 4) and out["pred_logits"].shape == (5, 1, 2)
    assert out["aux_outputs"] == []
    boxes_xyxy = box_ops.cxcywh_to_xyxy(out["pred_boxes"][:, 0])
    assert (boxes_xyxy >= 0).all() and (boxes_xyxy <= 1 + 1e-6).all()
    assert (boxes_xyxy[:, 2:] >= boxes_xyxy[:, :2]).all()
    assert torch.equal(out["pred_logits"][..., 1 - OBJECT], torch.zeros(5, 1))  # object prob = sigmoid(c)
    assert not torch.allclose(out["pred_boxes"][0], out["pred_boxes"][3])
    with torch.no_grad():
        alone = model.decode(image, text, torch.tensor([1]), torch.tensor([2]))
    assert torch.allclose(alone["pred_boxes"][0], out["pred_boxes"][4], atol=1e-6)
    assert torch.allclose(alone["pred_logits"][0], out["pred_logits"][4], atol=1e-6)


@pytest.mark.parametrize(
    ("xywh", "cxcywh"),
    [
        ((0.1, 0.2, 0.3, 0.4), (0.25, 0.4, 0.3, 0.4)),
        ((0.8, 0.1, 0.5, 0.2), (0.9, 0.2, 0.2, 0.2)),  # runs off the right edge: clipped
        ((0.0, 0.7, 0.2, 0.6), (0.1, 0.85, 0.2, 0.3)),  # off the bottom edge
    ],
    ids=["inside", "right-edge", "bottom-edge"],
)
def test_the_regressed_top_left_and_size_become_cxcywh(tiny, xywh, cxcywh):
    model, tokenizer = tiny
    regressor = model.regressor[-1]
    saved = regressor.weight.detach().clone(), regressor.bias.detach().clone()
    try:
        with torch.no_grad():
            regressor.weight.zero_()
            regressor.bias.copy_(torch.logit(torch.tensor(xywh)))
            tokens = tokenizer(PHRASES[:1])
            out = model(torch.randn(1, 3, 64, 64), tokens["input_ids"], tokens["attention_mask"])
    finally:
        with torch.no_grad():
            regressor.weight.copy_(saved[0])
            regressor.bias.copy_(saved[1])
    assert out["pred_boxes"][0, 0].tolist() == pytest.approx(cxcywh, abs=1e-5)


@pytest.mark.parametrize(
    ("channels", "grid", "embed_dim", "packed"),
    [(512, (14, 14), 1024, 6), (192, (4, 4), 32, 2), (8, (4, 4), 16, 1), (8, (3, 5), 16, 2)],
    ids=["seed", "tiny", "exact-fit", "odd-grid"],
)
def test_the_embedding_packs_into_a_few_channels_and_back(channels, grid, embed_dim, packed):
    feature_map, embedding = torch.randn(2, channels, *grid), torch.randn(2, embed_dim)
    features = pack_embedding(feature_map, embedding)
    assert features.shape == (2, channels + packed, *grid) and packed == math.ceil(
        embed_dim / (grid[0] * grid[1])
    )
    map_back, embedding_back = unpack_embedding(features, channels, embed_dim)
    assert torch.equal(map_back, feature_map) and torch.equal(embedding_back, embedding)


def test_cached_features_ground_like_fresh_ones(tiny):
    """What the trainer's caches hand back: fp16 image features, and each phrase's features stored
    unpadded and padded again beside longer phrases."""
    model, tokenizer = tiny
    tokens = tokenizer(PHRASES)
    pixels = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        fresh = model(pixels, tokens["input_ids"], tokens["attention_mask"])
        image_features = model.encode_image_features(pixels).half().float()
        alone = [tokenizer([p]) for p in PHRASES]
        rows = [model.encode_text_features(t["input_ids"], t["attention_mask"])[0] for t in alone]
        longest = max(len(r) for r in rows)
        text_features = torch.zeros(3, longest, rows[0].shape[-1])
        mask = torch.zeros(3, longest, dtype=torch.long)
        for i, row in enumerate(rows):
            text_features[i, : len(row)], mask[i, : len(row)] = row, 1
        cached = model(None, None, mask, image_features=image_features, text_features=text_features)
    assert image_features.shape == (3, model.vision.embed_dim, 4, 4)
    assert torch.allclose(fresh["pred_boxes"], cached["pred_boxes"], atol=2e-3)


def test_forward_with_shared_images_equals_decoding_pairs(tiny):
    model, tokenizer = tiny
    tokens = tokenizer(PHRASES)
    pixels = torch.randn(2, 3, 64, 64)
    image_index = torch.tensor([1, 0, 1])
    with torch.no_grad():
        shared = model(pixels, tokens["input_ids"], tokens["attention_mask"], image_index=image_index)
        each = model(pixels[image_index], tokens["input_ids"], tokens["attention_mask"])
    assert torch.allclose(shared["pred_boxes"], each["pred_boxes"], atol=1e-5)


def test_frozen_encoders_get_no_gradient_and_stay_in_eval_mode_with_the_clip_image_tower():
    config = config_from_preset("fusion-tiny", ["vision.frozen=true", "text.frozen=true"])
    model = build_model(config).train()
    assert model.vision.clip is not None and not model.vision.clip.training
    assert not model.vision.training and not model.text.training and model.fusion.training
    assert not any(p.requires_grad for p in model.vision.parameters())
    assert not any(p.requires_grad for p in model.text.parameters())
    head = [p for n, p in model.named_parameters() if not n.startswith(("vision.", "text."))]
    assert head and all(p.requires_grad for p in head)


def test_trained_encoders_all_get_a_gradient(tiny):
    """No parameter is left out of the graph (distributed training rejects unused ones)."""
    model = build_model(config_from_preset("fusion-tiny")).train()
    tokenizer = tiny[1]
    tokens = tokenizer(PHRASES)
    out = model(torch.randn(3, 3, 64, 64), tokens["input_ids"], tokens["attention_mask"])
    (out["pred_boxes"].sum() + out["pred_logits"].sum()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


# ---- CLIP from open_clip -------------------------------------------------------------------------
def test_clip_towers_give_open_clips_own_embeddings():
    from vgtool.models.clip import ClipImageTower, ClipTextTower, build_clip

    torch.manual_seed(0)
    reference = build_clip("RN50", pretrained=False, overrides=TINY_CLIP).eval()
    torch.manual_seed(0)
    image_tower = ClipImageTower("RN50", pretrained=False, overrides=TINY_CLIP).eval()
    torch.manual_seed(0)
    text_tower = ClipTextTower("RN50", pretrained=False, overrides=TINY_CLIP).eval()
    tokens = load_tokenizer(get_preset("fusion-tiny").text)(PHRASES, padding=True, return_tensors="pt")
    padded = torch.zeros(3, reference.context_length, dtype=torch.long)
    padded[:, : tokens["input_ids"].shape[1]] = tokens["input_ids"]
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = text_tower(tokens["input_ids"], tokens["attention_mask"])
        ours = text_tower.embedding(features, tokens["attention_mask"])
        assert torch.allclose(ours, reference.encode_text(padded), atol=1e-5)
        assert torch.allclose(image_tower(pixels), reference.encode_image(pixels), atol=1e-5)
    assert features.shape == (3, tokens["input_ids"].shape[1], 32) and text_tower.embed_dim == 32
    assert image_tower.embed_dim == 32 and image_tower.image_size == 64


def test_the_vision_encoder_renormalises_images_for_clip(tiny):
    model, _ = tiny
    vision = model.vision
    rgb = torch.rand(2, 3, 64, 64)

    def normalised(mean, std):
        return (rgb - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)

    with torch.no_grad():
        _, embedding = vision.split(vision(normalised(vision.mean, vision.std)))
        expected = vision.clip(normalised(vision.clip.mean, vision.clip.std))
    assert vision.mean != vision.clip.mean
    assert torch.allclose(embedding, expected, atol=1e-5)


def test_the_clip_tokenizer_matches_open_clip_and_works_offline():
    import open_clip

    tokenizer = load_tokenizer(get_preset("fusion-clip-rn50-hrnet").text)
    reference = open_clip.tokenize(PHRASES)  # [3, 77], zero-padded
    tokens = tokenizer(PHRASES, padding=True, return_tensors="pt")
    lengths = tokens["attention_mask"].sum(1)
    assert torch.equal(tokens["input_ids"], reference[:, : tokens["input_ids"].shape[1]])
    assert torch.equal(lengths, (reference != 0).sum(1))
    short = phrase_tokenizer(get_preset("fusion-tiny").text)  # max_length 24
    long_phrase = " ".join(["word"] * 40)
    assert short.truncated([long_phrase, "star"]) == [long_phrase]
    row = short([long_phrase])["input_ids"][0]
    assert len(row) == 24 and row[0] == tokenizer.start_id and row[-1] == tokenizer.end_id
    assert short.token_count("star") == 3


# ---- the seed: CLIP RN50 + HRNet-W18 -------------------------------------------------------------
@pytest.fixture(scope="module")
def seed_model():
    """The seed preset with random weights (nothing is downloaded)."""
    config = config_from_preset(
        "fusion-clip-rn50-hrnet", ["vision.pretrained=false", "text.pretrained=false"]
    )
    torch.manual_seed(0)
    return build_model(config).eval()


def test_seed_preset_names_the_seed_parts():
    config = get_preset("fusion-clip-rn50-hrnet")
    assert config.architecture == "fusion" and is_single_box(config)
    assert config.vision.spec == "timm:hrnet_w18.ms_aug_in1k" and config.vision.frozen
    assert config.vision.kwargs == {"features_only": True, "out_indices": [3]}
    assert (config.text.source, config.text.name, config.text.frozen) == ("open_clip", "RN50:openai", True)
    assert config.fusion.clip_image == "RN50:openai"
    assert (config.fusion.embed_channels, config.fusion.map_channels, config.fusion.fused_dim) == (
        128,
        64,
        256,
    )
    assert referenced_parts(config) == ["vision", "text"]  # HRNet and both CLIP towers by name


def test_seed_preset_shapes(seed_model):
    model = seed_model
    assert model.vision.map_dim == 512 and model.vision.clip_dim == 1024 and model.text.embed_dim == 1024
    assert model.image_reduce.weight.shape == (128, 1024, 1, 1)
    assert model.text_reduce.weight.shape == (128, 1024, 1, 1)
    assert model.map_reduce.weight.shape == (64, 512, 1, 1)
    assert model.fusion[0].weight.shape == (256, 320, 3, 3)  # 128 + 128 + 64 channels in
    assert model.fusion[-4].weight.shape == (256, 256, 3, 3)
    assert [(lin.in_features, lin.out_features) for lin in model.regressor[::3]] == [(256, 256), (256, 4)]
    assert (model.confidence.in_features, model.confidence.out_features) == (256, 1)
    tokens = phrase_tokenizer(model.config.text)(PHRASES)
    with torch.no_grad():
        features = model.encode_image_features(torch.zeros(1, 3, 224, 224))
        feature_map, embedding = model.vision.split(features)
        text_features = model.encode_text_features(tokens["input_ids"], tokens["attention_mask"])
        out = model(
            None,
            None,
            tokens["attention_mask"],
            image_features=features.expand(3, -1, -1, -1),
            text_features=text_features,
        )
    assert feature_map.shape == (1, 512, 14, 14) and embedding.shape == (1, 1024)
    assert features.shape == (1, 518, 14, 14) == (1, model.vision.embed_dim, 14, 14)
    assert text_features.shape[-1] == 1024
    assert out["pred_boxes"].shape == (3, 1, 4)


def test_seed_preset_parameter_counts(seed_model):
    def count(module, trainable=False):
        return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)

    model = seed_model
    assert count(model.vision.backbone) == 9_623_624  # HRNet-W18 up to its stride-16 head
    assert count(model.vision.clip) == 38_316_896  # CLIP RN50's image tower
    assert count(model.text) == 63_690_240  # its text tower
    head = 1024 * 128 + 128 + 1024 * 128 + 128 + 512 * 64 + 64  # 1x1 reductions
    head += 320 * 256 * 9 + 2 * 256 + 256 * 256 * 9 + 2 * 256  # fusion convolutions and batch norms
    head += 256 * 256 + 256 + 256 * 4 + 4 + 256 + 1  # regressor and confidence
    assert count(model, trainable=True) == head == 1_690_437
    assert count(model) == 9_623_624 + 38_316_896 + 63_690_240 + 1_690_437


def test_a_seed_checkpoint_stores_only_the_head(seed_model, tmp_path):
    model = seed_model
    model.config = get_preset("fusion-clip-rn50-hrnet")  # pretrained and frozen: referenced by name
    try:
        save_checkpoint(model, tmp_path / "seed")
    finally:
        model.config = config_from_preset(
            "fusion-clip-rn50-hrnet", ["vision.pretrained=false", "text.pretrained=false"]
        )
    from safetensors import safe_open

    with safe_open(str(tmp_path / "seed" / "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    assert keys and not any(k.startswith(("vision.", "text.")) for k in keys)
    document = json.loads((tmp_path / "seed" / "config.json").read_text())
    assert document["referenced"] == {"vision": "hrnet_w18.ms_aug_in1k", "text": "RN50:openai"}


# ---- configs --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        (lambda: FusionConfig(fusion_layers=0), ConfigError, "fusion_layers must be at least 1"),
        (lambda: FusionConfig(dropout=1.0), ConfigError, "dropout"),
        (
            lambda: FusionConfig(clip_image=None, clip_overrides={"embed_dim": 8}),
            ConfigError,
            "clip_overrides",
        ),
        (lambda: ModelConfig(fusion=FusionConfig(dropout=0.3)), ConfigError, "model.fusion is set"),
        (
            lambda: build_model(
                config_from_preset("fusion-tiny", ["fusion.clip_image=RN50", "vision.pretrained=true"])
            ),
            ConfigError,
            "names no pretrained tag",
        ),
        (
            lambda: build_model(config_from_preset("fusion-tiny", ["fusion.clip_image=RN51"])),
            ModelSourceError,
            "no built-in model named 'RN51'",
        ),
        (
            lambda: build_model(config_from_preset("fusion-tiny", ["fusion.clip_image=RN50:nope"])),
            ModelSourceError,
            "no pretrained tag 'nope'",
        ),
        (
            lambda: build_model(config_from_preset("fusion-tiny", ["text.max_length=78"])),
            ConfigError,
            "at most 77 tokens",
        ),
    ],
    ids=[
        "layers",
        "dropout",
        "overrides-without-clip",
        "fusion-on-vlgtr",
        "no-tag",
        "model",
        "tag",
        "length",
    ],
)
def test_bad_configs_are_refused(config, error, message):
    with pytest.raises(error, match=message):
        config()


def test_without_clip_the_pooled_map_is_the_image_embedding_and_any_text_encoder_fits():
    """The head on a shared backbone and a transformers text encoder (to compare families)."""
    config = config_from_preset("fusion-tiny", ["fusion.clip_image=null", "fusion.clip_overrides={}"])
    config = dataclasses.replace(config, text=TINY_TEXT)
    model = build_model(config).eval()
    assert model.vision.clip is None and model.image_reduce.in_channels == model.vision.map_dim == 192
    tokens = phrase_tokenizer(config.text)(PHRASES)
    with torch.no_grad():
        features = model.encode_image_features(torch.randn(2, 3, 64, 64))
        out = model(
            None,
            tokens["input_ids"],
            tokens["attention_mask"],
            image_features=features,
            image_index=torch.tensor([0, 1, 1]),
        )
    assert features.shape == (2, 192, 4, 4) and out["pred_boxes"].shape == (3, 1, 4)


def test_stored_config_holds_only_the_fusion_head(tiny):
    model, _ = tiny
    assert set(model_config_dict(model.config)) == {"vision", "text", "fusion", "architecture"}


# ---- checkpoints ---------------------------------------------------------------------------------
def test_checkpoint_round_trip_and_export(tiny, tmp_path):
    model, tokenizer = tiny
    save_checkpoint(model, tmp_path / "ckpt", extra={"note": "tiny"})
    document = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert document["model"] == model_config_dict(model.config)
    assert document["model"]["fusion"]["clip_overrides"] == TINY_CLIP
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(loaded, FusionModel) and to_dict(loaded.config) == to_dict(model.config)
    exported, size = export_checkpoint(tmp_path / "ckpt", tmp_path / "export")
    half = load_checkpoint(exported)
    tokens = tokenizer(PHRASES)
    pixels = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = model(pixels, tokens["input_ids"], tokens["attention_mask"])
        again = loaded(pixels, tokens["input_ids"], tokens["attention_mask"])
        rounded = half(pixels, tokens["input_ids"], tokens["attention_mask"])
    assert torch.equal(expected["pred_boxes"], again["pred_boxes"])
    assert torch.equal(expected["pred_logits"], again["pred_logits"])
    assert torch.allclose(expected["pred_boxes"], rounded["pred_boxes"], atol=1e-2)
    assert size < (tmp_path / "ckpt" / "model.safetensors").stat().st_size
