from __future__ import annotations

import dataclasses

import pytest
import torch

from vgtool.models.init import config_from_preset
from vgtool.models.text import load_tokenizer
from vgtool.models.vlgtr import build_model


def _tiny_config(
    query_selection: bool,
    encoder_layers: int = 0,
    scoring: str = "film",
    phrase_layers: int = 0,
    relation_bias: bool = False,
):
    config = config_from_preset("vlgtr-tiny")
    return dataclasses.replace(
        config,
        decoder=dataclasses.replace(
            config.decoder,
            query_selection=query_selection,
            proposal_scoring=scoring,
            relation_bias=relation_bias,
        ),
        encoder=dataclasses.replace(config.encoder, num_layers=encoder_layers, num_heads=2, ffn_dim=64),
        phrase_encoder=dataclasses.replace(
            config.phrase_encoder, num_layers=phrase_layers, num_heads=2, ffn_dim=64, dropout=0.0
        ),
    )


@pytest.fixture(
    scope="module",
    params=[
        (False, 0),
        (True, 0),
        (True, 2),
        (True, 0, "dot"),
        (True, 0, "dot", 2),
        (True, 0, "film", 0, True),
    ],
    ids=[
        "learned-queries",
        "query-selection",
        "query-selection+image-encoder",
        "dot-scoring",
        "dot-scoring+phrase-encoder",
        "query-selection+relation-bias",
    ],
)
def tiny(request):
    torch.manual_seed(0)
    config = _tiny_config(*request.param)
    model = build_model(config).eval()
    _randomise_relation_bias(model)
    return model, load_tokenizer(config.text)


def _randomise_relation_bias(model):
    """A new box-relation bias is zero; give it trained-looking weights so that tests can see it."""
    with torch.no_grad():
        for layer in model.decoder.layers:
            if layer.relation is not None:
                layer.relation.mlp[-1].weight.normal_(std=0.5)
                layer.relation.mlp[-1].bias.normal_(std=0.5)


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


def test_image_encoder_runs_once_per_image_not_per_phrase():
    torch.manual_seed(0)
    config = _tiny_config(True, encoder_layers=2)
    model, tokenizer = build_model(config).eval(), load_tokenizer(config.text)
    assert _tiny_config(True).encoder.num_layers == 0 and build_model(_tiny_config(True)).encoder is None
    rows = []
    model.encoder.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    ids, mask = _tokens(tokenizer, ["red car", "the blue square", "dog"])
    with torch.no_grad():
        image_memory, text_memory = (
            model.encode_image(torch.randn(2, 3, 64, 64)),
            model.encode_text(ids, mask),
        )
        out = model.decode(
            image_memory, text_memory, torch.arange(2).repeat_interleave(3), torch.arange(3).repeat(2)
        )
    assert rows == [2]  # one call, one row per image, before any phrase
    assert out["pred_boxes"].shape[0] == 6


def test_dot_scoring_runs_the_proposal_mlp_once_per_image():
    """``proposal_scoring: dot``: the first stage's MLP sees each image once, whatever the number
    of phrases, and each pair's object logits are the dot product of its phrase and its image's
    token features."""
    torch.manual_seed(0)
    config = _tiny_config(True, scoring="dot")
    model, tokenizer = build_model(config).eval(), load_tokenizer(config.text)
    rows = []
    model.proposals.mlp.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    ids, mask = _tokens(tokenizer, ["red car", "the blue square", "dog"])
    with torch.no_grad():
        image_memory, text_memory = (
            model.encode_image(torch.randn(2, 3, 64, 64)),
            model.encode_text(ids, mask),
        )
        image_index, text_index = torch.arange(2).repeat_interleave(3), torch.arange(3).repeat(2)
        model.decode(image_memory, text_memory, image_index, text_index)
        assert rows == [2]
        features = model.proposals.image_features(image_memory.keys)  # [2, N, D]
        phrase = model.phrase_proj(text_memory.pooled)  # [3, D]
        logits = model.proposals.dot_scores(features, phrase, image_index, text_index)
    d = features.shape[-1]
    for k, (i, p) in enumerate(zip(image_index.tolist(), text_index.tolist(), strict=True)):
        expected = features[i] @ model.proposals.score_proj(phrase[p]) / d**0.5 + model.proposals.score_bias
        assert torch.allclose(logits[k, :, 0], expected, atol=1e-5)
        assert torch.equal(logits[k, :, 1], torch.zeros_like(expected))


def test_phrase_encoder_ignores_padding_and_is_trained_with_a_frozen_text_encoder():
    """The phrase encoder's output for a phrase does not depend on how much padding it is batched
    with, and its weights get gradients while the pretrained-style text encoder stays frozen."""
    torch.manual_seed(0)
    config = _tiny_config(True, phrase_layers=2)
    model, tokenizer = build_model(config), load_tokenizer(config.text)
    model.set_frozen(vision=False, text=True)
    assert (
        _tiny_config(True).phrase_encoder.num_layers == 0
        and build_model(_tiny_config(True)).phrase_encoder is None
    )
    model.eval()
    with torch.no_grad():
        ids, mask = _tokens(tokenizer, ["dog", "the small blue square left of the green star"])
        batched = model.encode_text(ids, mask)
        alone = model.encode_text(*_tokens(tokenizer, ["dog"]))
        model.phrase_encoder, encoder = None, model.phrase_encoder
        without = model.encode_text(ids, mask)
        model.phrase_encoder = encoder
    # A new phrase encoder starts as the identity on the (normalised) projected tokens, up to its
    # final norm's epsilon.
    assert torch.allclose(batched.tokens, without.tokens, atol=1e-3)
    assert not torch.allclose(batched.tokens, without.tokens * 1.01, atol=1e-3)
    with torch.no_grad():  # and with trained-looking weights it ignores padding
        for param in encoder.parameters():
            param.add_(torch.randn_like(param) * 0.1)
        batched = model.encode_text(ids, mask)
        alone = model.encode_text(*_tokens(tokenizer, ["dog"]))
    length = int(mask[0].sum())
    assert torch.allclose(batched.tokens[0, :length], alone.tokens[0], atol=1e-5)
    assert torch.allclose(batched.pooled[0], alone.pooled[0], atol=1e-5)
    model.train()
    out = model(torch.randn(2, 3, 64, 64), ids, mask)
    (out["pred_boxes"].sum() + out["pred_logits"].sum()).backward()
    assert model.phrase_encoder.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.text.parameters())


def test_relation_bias_starts_as_no_bias_and_is_trained():
    """A new box-relation bias leaves the model's outputs as they would be without it; it gets
    gradients in training; with weights it changes the outputs; it needs query selection."""
    torch.manual_seed(0)
    config = _tiny_config(True, relation_bias=True)
    model, tokenizer = build_model(config).eval(), load_tokenizer(config.text)
    without = build_model(_tiny_config(True)).eval()
    missing, unexpected = without.load_state_dict(model.state_dict(), strict=False)
    assert not missing and unexpected and all(".relation." in key for key in unexpected)
    images, (ids, mask) = (
        torch.randn(2, 3, 64, 64),
        _tokens(tokenizer, ["red car", "the dog left of the cat"]),
    )
    with torch.no_grad():
        a, b = model(images, ids, mask), without(images, ids, mask)
    assert torch.equal(a["pred_boxes"], b["pred_boxes"]) and torch.equal(a["pred_logits"], b["pred_logits"])
    model.train()
    out = model(images, ids, mask)
    (out["pred_boxes"].sum() + out["pred_logits"].sum()).backward()
    assert all(layer.relation.mlp[-1].weight.grad.abs().sum() > 0 for layer in model.decoder.layers)
    _randomise_relation_bias(model)
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(images, ids, mask)["pred_logits"], b["pred_logits"], atol=1e-4)
    with pytest.raises(ValueError, match=r"needs decoder\.query_selection"):
        build_model(_tiny_config(False, relation_bias=True))


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


@pytest.mark.parametrize("scoring", ["film", "dot"])
def test_query_selection_supervises_every_token_in_training_only(scoring):
    """Two-stage decoding: in training each image token proposes a box (``enc_outputs``, for the
    loss); in eval mode only the chosen tokens' boxes are computed, with the same final outputs."""
    from vgtool.training.criterion import LossConfig, SetCriterion

    torch.manual_seed(0)
    config = _tiny_config(True, scoring=scoring)
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
    if scoring == "dot":
        assert model.proposals.score_proj.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        evaluated = model(images, ids, mask)
    assert "enc_outputs" not in evaluated
    assert torch.allclose(evaluated["pred_boxes"], out["pred_boxes"].detach(), atol=1e-6)
    assert torch.allclose(evaluated["pred_logits"], out["pred_logits"].detach(), atol=1e-6)


def test_category_head_scores_every_image_token_in_training_only():
    """The auxiliary category head (``config.categories``) gives one row of logits per image token,
    once per image however many phrases share it, and nothing in eval mode."""
    torch.manual_seed(0)
    config = dataclasses.replace(_tiny_config(True), categories=("circle", "square", "star"))
    model = build_model(config).train()
    ids, mask = _tokens(load_tokenizer(config.text), ["the red circle", "all stars", "the square"])
    image_index = torch.tensor([0, 0, 1])
    out = model(torch.randn(2, 3, 64, 64), ids, mask, image_index=image_index)
    category = out["category_outputs"]
    assert category["grid"] == (4, 4)
    assert category["logits"].shape == (2, 16, 3)
    assert torch.equal(category["image_index"], image_index)
    model.eval()
    with torch.no_grad():
        assert "category_outputs" not in model(torch.randn(2, 3, 64, 64), ids, mask, image_index=image_index)


def test_add_category_head_records_the_names():
    model = build_model(_tiny_config(True))
    assert model.category_head is None and model.config.categories == ()
    model.add_category_head(("a", "b"))
    assert model.config.categories == ("a", "b")
    assert model.category_head.out_features == 2
