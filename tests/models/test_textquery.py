"""The text-as-query single-box model: outputs and box formats, DINOv3 through transformers, the
seed preset's shapes and parameter counts, configs of several families, and checkpoints."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from vgtool import box_ops
from vgtool.checkpoint import config_hash, export_checkpoint, load_checkpoint, save_checkpoint
from vgtool.config import to_dict
from vgtool.errors import CheckpointError, ConfigError
from vgtool.models.build import build_model, is_single_box, model_family
from vgtool.models.config import OBJECT, ModelConfig, model_config_dict
from vgtool.models.presets import config_from_preset, get_preset
from vgtool.models.text import load_tokenizer
from vgtool.models.textquery import TextQueryModel
from vgtool.models.textquery_config import TextQueryConfig

PHRASES = ["the red circle", "a blue square on the left of the green star", "star"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    config = config_from_preset("textquery-tiny")
    return build_model(config).eval(), load_tokenizer(config.text)


def _tokens(tokenizer, phrases):
    return tokenizer(phrases, padding=True, return_tensors="pt")


def test_one_box_per_pair_in_cxcywh_with_a_valid_xyxy_and_a_confidence(tiny):
    model, tokenizer = tiny
    tokens = _tokens(tokenizer, PHRASES)
    with torch.no_grad():
        image = model.encode_image(torch.randn(2, 3, 64, 64))
        text = model.encode_text(tokens["input_ids"], tokens["attention_mask"])
        image_index, text_index = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1, 2, 0, 2])
        out = model.decode(image, text, image_index, text_index)
    assert isinstance(model, TextQueryModel)
    assert out["pred_boxes"].shape == (5, 1, 4) and out["pred_logits"].shape == (5, 1, 2)
    assert out["aux_outputs"] == []
    boxes_xyxy = box_ops.cxcywh_to_xyxy(out["pred_boxes"][:, 0])
    assert (boxes_xyxy >= 0).all() and (boxes_xyxy <= 1).all()
    assert (boxes_xyxy[:, 2:] >= boxes_xyxy[:, :2]).all()
    # the no-object logit is 0: the object probability is the sigmoid of the confidence logit
    assert torch.equal(out["pred_logits"][..., 1 - OBJECT], torch.zeros(5, 1))
    # each pair depends on its own image and phrase only
    assert not torch.allclose(out["pred_boxes"][0], out["pred_boxes"][3])
    with torch.no_grad():
        alone = model.decode(image, text, torch.tensor([1]), torch.tensor([2]))
    assert torch.allclose(alone["pred_boxes"][0], out["pred_boxes"][4], atol=1e-6)


def test_an_untrained_head_starts_near_the_central_box(tiny):
    model, tokenizer = tiny
    tokens = _tokens(tokenizer, PHRASES)
    with torch.no_grad():
        out = model(torch.randn(3, 3, 64, 64), tokens["input_ids"], tokens["attention_mask"])
    boxes_xyxy = box_ops.cxcywh_to_xyxy(out["pred_boxes"][:, 0])
    assert torch.allclose(boxes_xyxy, torch.tensor([0.2, 0.2, 0.8, 0.8]).expand(3, 4), atol=0.1)


def test_padding_tokens_change_nothing(tiny):
    model, _ = tiny
    torch.manual_seed(1)
    features = torch.randn(1, 5, model.text.embed_dim)
    padded = torch.cat([features, torch.randn(1, 4, model.text.embed_dim)], dim=1)
    mask = torch.ones(1, 5, dtype=torch.long)
    padded_mask = torch.cat([mask, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    with torch.no_grad():
        image = model.encode_image(torch.randn(1, 3, 64, 64))
        short = model.decode(image, model.project_text(features, mask))
        long = model.decode(image, model.project_text(padded, padded_mask))
    assert torch.allclose(short["pred_boxes"], long["pred_boxes"], atol=1e-6)
    assert torch.allclose(short["pred_logits"], long["pred_logits"], atol=1e-6)


def test_forward_with_shared_images_equals_decoding_pairs(tiny):
    model, tokenizer = tiny
    tokens = _tokens(tokenizer, PHRASES)
    pixels = torch.randn(2, 3, 64, 64)
    image_index = torch.tensor([1, 0, 1])
    with torch.no_grad():
        shared = model(pixels, tokens["input_ids"], tokens["attention_mask"], image_index=image_index)
        each = model(pixels[image_index], tokens["input_ids"], tokens["attention_mask"])
    assert torch.allclose(shared["pred_boxes"], each["pred_boxes"], atol=1e-5)


def test_frozen_encoders_get_no_gradient_and_stay_in_eval_mode():
    config = config_from_preset("textquery-tiny", ["vision.frozen=true", "text.frozen=true"])
    model = build_model(config).train()
    assert not model.vision.training and not model.text.training and model.decoder.training
    assert not any(p.requires_grad for p in model.vision.parameters())
    assert not any(p.requires_grad for p in model.text.parameters())


# ---- DINOv3 through transformers ----------------------------------------------------------------
def _tiny_dinov3_folder(tmp_path, registers: int = 4):
    from vgtool.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from transformers import DINOv3ViTConfig

    folder = tmp_path / "dinov3-tiny"
    DINOv3ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_register_tokens=registers,
        patch_size=16,
        image_size=64,
    ).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("registers", [0, 4])
def test_dinov3_patch_tokens_exclude_the_class_and_register_tokens(tmp_path, monkeypatch, registers):
    from vgtool.models.config import VisionConfig
    from vgtool.models.vision import VisionBackbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = _tiny_dinov3_folder(tmp_path, registers)
    backbone = VisionBackbone(VisionConfig(source="hf", name=str(folder), pretrained=False, image_size=64))
    backbone.eval()  # in training mode DINOv3 jitters its RoPE positions
    pixels = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        features = backbone(pixels)  # [B, C, h, w]
        hidden = backbone.model(pixel_values=pixels).last_hidden_state  # [B, 1 + R + h*w, C]
    assert backbone.num_prefix_tokens == 1 + registers
    assert features.shape == (2, 32, 4, 3)
    assert hidden.shape[1] == 1 + registers + 12
    assert torch.equal(features.flatten(2).transpose(1, 2), hidden[:, 1 + registers :])
    assert backbone.mean == pytest.approx((0.485, 0.456, 0.406))  # no processor file: ImageNet's


def test_a_textquery_model_on_a_dinov3_backbone_grounds(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = _tiny_dinov3_folder(tmp_path)
    config = config_from_preset(
        "textquery-tiny", ["vision.source=hf", f"vision.name={folder}", "vision.kwargs={}"]
    )
    model = build_model(config).eval()
    tokens = _tokens(load_tokenizer(config.text), PHRASES[:2])
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64), tokens["input_ids"], tokens["attention_mask"])
    assert out["pred_boxes"].shape == (2, 1, 4)


# ---- the seed preset: DINOv3 ViT-B/16 + BGE-small, with a 512-wide 6-layer decoder ----------------
DINOV3_VITB16 = {  # facebook/dinov3-vitb16-pretrain-lvd1689m's config
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "num_register_tokens": 4,
    "patch_size": 16,
    "image_size": 224,
}
BGE_SMALL = {  # BAAI/bge-small-en-v1.5's config (a BERT)
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "vocab_size": 30522,
}


@pytest.fixture(scope="module")
def seed_model(tmp_path_factory):
    """The seed preset with random weights: only its hub names are swapped for local folders that
    hold the same two configs (nothing is downloaded)."""
    from vgtool.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from transformers import BertConfig, DINOv3ViTConfig

    root = tmp_path_factory.mktemp("seed")
    DINOv3ViTConfig(**DINOV3_VITB16).save_pretrained(root / "dinov3")
    BertConfig(**BGE_SMALL).save_pretrained(root / "bge")
    config = config_from_preset(
        "textquery-dinov3b-bge",
        [
            "vision.pretrained=false",
            f"vision.name={root / 'dinov3'}",
            "text.pretrained=false",
            f"text.name={root / 'bge'}",
        ],
    )
    torch.manual_seed(0)
    return build_model(config)


def test_seed_preset_names_the_seed_parts():
    config = get_preset("textquery-dinov3b-bge")
    assert config.architecture == "textquery" and is_single_box(config)
    assert config.vision.spec == "hf:facebook/dinov3-vitb16-pretrain-lvd1689m" and config.vision.frozen
    assert config.text.name == "BAAI/bge-small-en-v1.5" and config.text.frozen
    assert config.textquery == TextQueryConfig(d_model=512, num_layers=6, num_heads=8, ffn_dim=2048)


def test_seed_preset_shapes(seed_model):
    model = seed_model
    assert model.vision.embed_dim == 768 and model.vision.num_prefix_tokens == 5
    assert model.text.embed_dim == 384
    assert (model.image_proj.in_features, model.image_proj.out_features) == (768, 512)
    assert (model.text_proj.in_features, model.text_proj.out_features) == (384, 512)
    assert len(model.decoder.layers) == 6 and model.decoder.norm.normalized_shape == (512,)
    for layer in model.decoder.layers:
        assert layer.self_attn.num_heads == 8 and layer.multihead_attn.num_heads == 8
        assert layer.self_attn.embed_dim == 512 and layer.linear1.out_features == 2048
    assert [(lin.in_features, lin.out_features) for lin in model.box_head.layers] == [(512, 256), (256, 4)]
    assert (model.confidence_head.in_features, model.confidence_head.out_features) == (512, 1)
    with torch.no_grad():
        features = model.encode_image_features(torch.zeros(1, 3, 224, 224))
    assert features.shape == (1, 768, 14, 14)


# The seed reports 144,968,836 parameters, 25,948,420 of them trainable. The head here has the
# confidence head on top (+513), and the text encoder is built without BERT's pooler (-147,840),
# which token features never use: 144,968,836 - 147,840 + 513 = 144,821,509.
SEED_TRAINABLE = 25_948_420
SEED_TOTAL = 144_968_836
BERT_POOLER = 384 * 384 + 384
CONFIDENCE_HEAD = 512 + 1


def test_seed_preset_parameter_counts(seed_model):
    def count(module, trainable=False):
        return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)

    model = seed_model
    assert count(model.vision) == 85_660_416
    assert count(model.text) == 33_212_160 == 33_360_000 - BERT_POOLER
    assert count(model, trainable=True) == SEED_TRAINABLE + CONFIDENCE_HEAD == 25_948_933
    assert count(model.vision, trainable=True) == count(model.text, trainable=True) == 0
    assert count(model) == SEED_TOTAL - BERT_POOLER + CONFIDENCE_HEAD == 144_821_509


# ---- configs of several families ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            lambda: ModelConfig(
                architecture="textquery", decoder=dataclasses.replace(get_preset("vlgtr-tiny").decoder)
            ),
            "model.decoder is set, but architecture 'textquery'",
        ),
        (lambda: ModelConfig(textquery=TextQueryConfig(d_model=64)), "model.textquery is set"),
        (lambda: TextQueryConfig(d_model=30, num_heads=4), "must divide"),
        (lambda: TextQueryConfig(num_layers=0), "num_layers must be at least 1"),
        (lambda: TextQueryConfig(dropout=1.0), "dropout"),
        (lambda: model_family("nope"), "no model family is registered for architecture 'nope'"),
    ],
    ids=["decoder-on-textquery", "textquery-on-vlgtr", "heads", "layers", "dropout", "unknown"],
)
def test_bad_configs_are_refused(config, message):
    with pytest.raises(ConfigError, match=message):
        config()


def test_overrides_reach_the_textquery_head():
    config = config_from_preset("textquery-tiny", ["textquery.num_layers=3", "textquery.box_hidden=16"])
    model = build_model(config)
    assert len(model.decoder.layers) == 3 and model.box_head.layers[0].out_features == 16
    with pytest.raises(ConfigError, match=r"model\.decoder is set"):
        config_from_preset("textquery-tiny", ["decoder.num_queries=3"])


def test_stored_configs_hold_only_their_own_head_and_vlgtr_hashes_are_unchanged():
    vlgtr, textquery = get_preset("vlgtr-tiny"), get_preset("textquery-tiny")
    assert set(model_config_dict(vlgtr)) == {"vision", "text", "decoder", "architecture"}
    assert set(model_config_dict(textquery)) == {"vision", "text", "textquery", "architecture"}
    # hashes recorded before the single-box families existed
    assert config_hash(vlgtr) == "c8ef3636e44b6ad8"
    assert config_hash(get_preset("vlgtr-dinov2s-roberta")) == "44136fa355b3678a"
    assert config_hash(textquery) != config_hash(dataclasses.replace(vlgtr, decoder=ModelConfig().decoder))
    changed = dataclasses.replace(textquery, textquery=dataclasses.replace(textquery.textquery, num_layers=3))
    assert config_hash(changed) != config_hash(textquery)


# ---- checkpoints ---------------------------------------------------------------------------------
def test_checkpoint_round_trip_and_export(tiny, tmp_path):
    model, tokenizer = tiny
    save_checkpoint(model, tmp_path / "ckpt", extra={"note": "tiny"})
    document = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert document["model"] == model_config_dict(model.config) and "decoder" not in document["model"]
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(loaded, TextQueryModel) and to_dict(loaded.config) == to_dict(model.config)
    exported, size = export_checkpoint(tmp_path / "ckpt", tmp_path / "export")
    half = load_checkpoint(exported)
    tokens = _tokens(tokenizer, PHRASES)
    pixels = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = model(pixels, tokens["input_ids"], tokens["attention_mask"])
        again = loaded(pixels, tokens["input_ids"], tokens["attention_mask"])
        rounded = half(pixels, tokens["input_ids"], tokens["attention_mask"])
    assert torch.equal(expected["pred_boxes"], again["pred_boxes"])
    assert torch.equal(expected["pred_logits"], again["pred_logits"])
    assert torch.allclose(expected["pred_boxes"], rounded["pred_boxes"], atol=5e-3)
    assert size < (tmp_path / "ckpt" / "model.safetensors").stat().st_size


def test_a_textquery_checkpoint_does_not_load_as_another_family(tiny, tmp_path):
    model, _ = tiny
    save_checkpoint(model, tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "config.json"
    document = json.loads(path.read_text())
    document["model"]["architecture"] = "vlgtr"
    del document["model"]["textquery"]
    path.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="does not fit the architecture"):
        load_checkpoint(tmp_path / "ckpt")


def test_frozen_pretrained_encoders_are_referenced_not_stored(tmp_path, monkeypatch):
    """As in the seed: DINOv3 (here a tiny one saved with its weights) and a packaged text encoder,
    both pretrained and frozen, are rebuilt from their source; the checkpoint holds the head only."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    from vgtool.models.presets import MINILM

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = _tiny_dinov3_folder(tmp_path)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(folder)  # with weights
    vision = ["vision.source=hf", f"vision.name={folder}", "vision.kwargs={}", "vision.pretrained=true"]
    text = [f"text.name={MINILM}", "text.pretrained=true", "text.frozen=true", "text.overrides={}"]
    config = config_from_preset("textquery-tiny", [*vision, "vision.frozen=true", *text])
    model = build_model(config).eval()
    save_checkpoint(model, tmp_path / "ckpt")
    document = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert document["referenced"] == {"vision": str(folder), "text": MINILM}
    stored = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert stored and not any(key.startswith(("vision.", "text.")) for key in stored)
    loaded = load_checkpoint(tmp_path / "ckpt")
    tokens = _tokens(load_tokenizer(config.text), PHRASES)
    pixels = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = model(pixels, tokens["input_ids"], tokens["attention_mask"])["pred_boxes"]
        again = loaded(pixels, tokens["input_ids"], tokens["attention_mask"])["pred_boxes"]
    assert torch.equal(expected, again)
