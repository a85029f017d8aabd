from __future__ import annotations

import dataclasses

import pytest
import torch

from vgtool.models.presets import config_from_preset
from vgtool.models.text import load_tokenizer
from vgtool.models.vlgtr import build_model


def _tiny_config(query_selection: bool):
    config = config_from_preset("vlgtr-tiny")
    return dataclasses.replace(
        config, decoder=dataclasses.replace(config.decoder, query_selection=query_selection)
    )


@pytest.fixture(scope="module", params=[False, True], ids=["learned-queries", "query-selection"])
def tiny(request):
    torch.manual_seed(0)
    config = _tiny_config(request.param)
    return build_model(config).eval(), load_tokenizer(config.text)


def _tokens(tokenizer, phrases):
    enc = tokenizer(phrases, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_output_shapes_and_box_format(tiny):
    model, tokenizer = tiny
    ids, mask = _tokens(tokenizer, ["red car", "the man in the red shirt", "dog"])
    out = model(torch.randn(3, 3, 64, 64), ids, mask)
    queries = model.config.decoder.num_queries
    assert out["pred_logits"].shape == (3, queries, 2)
    assert out["pred_boxes"].shape == (3, queries, 4)
    assert out["pred_boxes"].min() >= 0 and out["pred_boxes"].max() <= 1  # cxcywh in [0, 1]
    assert len(out["aux_outputs"]) == model.config.decoder.num_layers - 1
    for aux in out["aux_outputs"]:
        assert aux["pred_boxes"].shape == (3, queries, 4)


def test_pairwise_decode_matches_forward(tiny):
    """Grounding P phrases in B images through shared memories equals B*P separate forwards."""
    model, tokenizer = tiny
    images = torch.randn(2, 3, 64, 64)
    phrases = ["red car", "a small blue square left of the star", "dog"]
    ids, mask = _tokens(tokenizer, phrases)
    with torch.no_grad():
        image_memory, text_memory = model.encode_image(images), model.encode_text(ids, mask)
        image_index = torch.arange(2).repeat_interleave(3)
        text_index = torch.arange(3).repeat(2)
        shared = model.decode(image_memory, text_memory, image_index, text_index)
        for k, (i, p) in enumerate(zip(image_index.tolist(), text_index.tolist(), strict=True)):
            single_ids, single_mask = _tokens(tokenizer, [phrases[p]])
            alone = model(images[i : i + 1], single_ids, single_mask)
            assert torch.allclose(shared["pred_boxes"][k], alone["pred_boxes"][0], atol=1e-5)
            assert torch.allclose(shared["pred_logits"][k], alone["pred_logits"][0], atol=1e-5)


def test_forward_with_shared_images_equals_repeated_images(tiny):
    """``forward(image_index=...)``: phrases that share an image give what copies of it would."""
    model, tokenizer = tiny
    images = torch.randn(2, 3, 64, 64)
    ids, mask = _tokens(tokenizer, ["red car", "the blue square", "dog", "a cat"])
    image_index = torch.tensor([0, 0, 1, 0])
    with torch.no_grad():
        shared = model(images, ids, mask, image_index=image_index)
        repeated = model(images[image_index], ids, mask)
    for key in ("pred_boxes", "pred_logits"):
        assert shared[key].shape[0] == 4
        assert torch.allclose(shared[key], repeated[key], atol=1e-5)


def test_mismatched_counts_need_indices(tiny):
    model, tokenizer = tiny
    ids, mask = _tokens(tokenizer, ["a", "b", "c"])
    with pytest.raises(ValueError, match="pass image_index"):
        model.decode(model.encode_image(torch.randn(2, 3, 64, 64)), model.encode_text(ids, mask))


def test_freezing_controls_gradients_and_mode(tiny):
    model, _ = tiny
    model.set_frozen(vision=True, text=False)
    model.train()
    assert not any(p.requires_grad for p in model.vision.parameters())
    assert all(p.requires_grad for p in model.text.parameters())
    assert not model.vision.training and model.text.training
    model.set_frozen(vision=False, text=False)
    model.eval()


def test_hf_vision_backbone_from_local_config(tmp_path):
    """The transformers vision source (DINOv2 here) builds from a local folder, offline."""
    from transformers import Dinov2Config

    from vgtool.models.config import VisionConfig
    from vgtool.models.vision import VisionBackbone

    Dinov2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=8,
        image_size=32,
    ).save_pretrained(tmp_path)
    backbone = VisionBackbone(VisionConfig(source="hf", name=str(tmp_path), pretrained=False, image_size=32))
    features = backbone(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 32, 4, 4)
    assert backbone.config.spec == f"hf:{tmp_path}"


def test_unknown_timm_model_is_a_clean_error():
    from vgtool.errors import ModelSourceError
    from vgtool.models.config import VisionConfig
    from vgtool.models.vision import VisionBackbone

    with pytest.raises(ModelSourceError, match="no model named"):
        VisionBackbone(VisionConfig(name="no_such_model_xyz", pretrained=False))


def test_query_selection_supervises_every_token_in_training_only():
    """Two-stage decoding: in training each image token proposes a box (``enc_outputs``, for the
    loss); in eval mode only the chosen tokens' boxes are computed, with the same final outputs."""
    from vgtool.training.criterion import LossConfig, SetCriterion

    torch.manual_seed(0)
    config = _tiny_config(True)
    model = build_model(config)
    ids, mask = _tokens(load_tokenizer(config.text), ["the red circle", "all stars"])
    images = torch.randn(2, 3, 64, 64)
    model.train()
    out = model(images, ids, mask)
    tokens = (64 // 16) ** 2
    assert out["enc_outputs"]["pred_logits"].shape == (2, tokens, 2)
    assert out["enc_outputs"]["pred_boxes"].shape == (2, tokens, 4)
    targets = [{"boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2]])}, {"boxes": torch.zeros(0, 4)}]
    losses = SetCriterion(LossConfig())(out, targets)
    assert {"loss_ce_enc", "loss_bbox_enc", "loss_giou_enc"} <= set(losses)
    losses["loss"].backward()
    assert model.proposals.film.weight.grad is not None
    model.eval()
    with torch.no_grad():
        evaluated = model(images, ids, mask)
    assert "enc_outputs" not in evaluated
    assert torch.allclose(evaluated["pred_boxes"], out["pred_boxes"].detach(), atol=1e-6)
    assert torch.allclose(evaluated["pred_logits"], out["pred_logits"].detach(), atol=1e-6)
