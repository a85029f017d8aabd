"""Grounding DINO and MM-Grounding-DINO (LLMDet) from transformers as a
:class:`~vgtool.grounders.base.Grounder`.

Grounding DINO fuses text and image inside the model, so there is no image memory to reuse: each
forward takes images and one caption. The run's phrases are packed once into captions
``"p1. p2. p3."`` of at most ``config.max_text_len`` tokens (256, counting ``[CLS]`` and ``[SEP]``),
and each phrase is tied to its tokens in its caption through the tokenizer's character offsets
(as MDETR does), never by matching label strings. A batch then runs one forward per (group of
same-size images, caption).

Scores follow transformers' ``post_process_grounded_object_detection``: a query's probability for a
token is the sigmoid of its logit; a phrase's score for a query is the highest of those over the
phrase's tokens (for the phrase whose token scored the box, that is the box score transformers
reports). Boxes come out as ``cxcywh`` in [0, 1] of the model input, which is the whole image
resized (padding only appears when differently sized images share a batch), so they scale straight
to the displayed image.

Images of different sizes are never batched together: padding them to one shape changes the boxes
even with pixel masks (tiny test models, a 120x80 image padded next to a taller one: its matched
boxes moved by a median 4-6 px, up to 40 px); same-size images batch exactly (within 1e-6).

The model is called in one place, :meth:`GroundingDinoGrounder.raw_outputs`; the ONNX Runtime
grounder (:mod:`vgtool.grounders.grounding_dino_onnx`) replaces it with a graph.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from vgtool import box_ops
from vgtool.data.image_dataset import ImageBatch
from vgtool.device import autocast
from vgtool.errors import CheckpointError
from vgtool.grounders.base import EncodedPhrases, Measure, ModelKey, no_measure
from vgtool.grounders.hf import HFModelRef, ImageProcessorTransform, load_pretrained, same_size_groups
from vgtool.groundings import Groundings
from vgtool.models.postprocess import PostProcessConfig, select_detections
from vgtool.torchvision_compat import ensure_torchvision_importable

# config model_type -> the transformers class its checkpoints load into (LLMDet: mm-grounding-dino)
MODEL_CLASSES: dict[str, str] = {
    "grounding-dino": "GroundingDinoForObjectDetection",
    "mm-grounding-dino": "MMGroundingDinoForObjectDetection",
}
# The model card's box threshold (IDEA-Research/GroundingDINO demos: box 0.35, text 0.25). Here it
# applies to each phrase's own score, the max over its tokens.
DEFAULT_THRESHOLD = 0.35
# Caption separator: "." is one of the model's delimiter tokens (it splits the text attention).
SEPARATOR = ". "


@dataclass(frozen=True)
class Caption:
    """One caption of packed phrases, tokenised for the model.

    Attributes:
        text: ``"p1. p2."``.
        input_ids, attention_mask, token_type_ids: ``[1, L]`` on the model's device, ``L <= 256``.
        phrase_ids: the phrases it holds (indices into the run's phrases), ascending.
        spans: per phrase, its tokens ``[start, end)`` in ``input_ids``.
    """

    text: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    phrase_ids: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]

    def to(self, device: torch.device) -> Caption:
        """The same caption with its tensors on ``device``."""
        return replace(
            self,
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            token_type_ids=self.token_type_ids.to(device),
        )


class GroundingDinoGrounder:
    """A Grounding DINO (or MM-Grounding-DINO / LLMDet) model from transformers on one device.

    Attributes:
        model: the ``...ForObjectDetection`` model, in eval mode on ``device``.
        config: its config.
        processor: the checkpoint's processor; ``tokenizer``, ``image_processor``: its parts.
        ref: where it came from.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        ref: HFModelRef,
        device: torch.device,
        *,
        bf16: bool,
        compiled: bool,
        config: Any | None = None,
    ):
        """``config`` defaults to ``model.config``; a runtime that runs an exported graph instead of
        the torch model passes ``model=None`` and the config alone."""
        self.model = model
        self.config = model.config if config is None else config
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.ref = ref
        self.family = ref.model_type
        self.source = ref.spec
        self.device = device
        self.bf16 = bf16
        self.compiled = compiled
        self.default_threshold = DEFAULT_THRESHOLD
        self.max_text_len = int(self.config.max_text_len)
        self.image_transform = ImageProcessorTransform(self.image_processor)

    @classmethod
    def load(
        cls, ref: HFModelRef, *, device: torch.device, bf16: bool | None = None, compile_model: bool = False
    ) -> GroundingDinoGrounder:
        """Load the processor and the model from ``ref.folder`` (float32 weights; bf16 autocast is on
        for CUDA unless ``bf16`` says otherwise). ``compile_model`` compiles the forward with dynamic
        shapes (images differ in size)."""
        if ref.model_type not in MODEL_CLASSES:
            raise CheckpointError(f"{ref.spec}: model_type {ref.model_type!r} is not a Grounding DINO model")
        ensure_torchvision_importable()
        import transformers

        processor = load_pretrained(transformers.AutoProcessor, ref)
        if not getattr(processor.tokenizer, "is_fast", False):
            raise CheckpointError(
                f"{ref.spec}: needs a fast tokenizer (tokenizer.json) for character offsets"
            )
        model_class = getattr(transformers, MODEL_CLASSES[ref.model_type])
        model = load_pretrained(model_class, ref, dtype=torch.float32).eval().to(device)
        if compile_model:
            model.forward = torch.compile(model.forward, dynamic=True)
        use_bf16 = device.type == "cuda" if bf16 is None else bf16
        return cls(model, processor, ref, device, bf16=use_bf16, compiled=compile_model)

    @classmethod
    def key(cls, ref: HFModelRef) -> ModelKey:
        """Identity and threshold without loading the weights."""
        return ModelKey(source=ref.spec, identity=ref.identity(), default_threshold=DEFAULT_THRESHOLD)

    # ---- what the run records -------------------------------------------------------------------
    def identity(self) -> dict[str, str]:
        return self.ref.identity()

    def settings(self) -> dict[str, Any]:
        return {"bf16": self.bf16, "compile": self.compiled}

    def per_image_memory_bytes(self, num_phrases: int) -> int:
        """For the largest input the image processor makes: its pixels (uint8 and float), the
        backbone's stride-4 activations (about 12 live tensors of its width), the encoder's tokens
        over the four levels (about 12 tensors of ``d_model`` plus its FFN) and the text/image
        cross-attention weights (``heads x tokens x max_text_len``, 4 live copies). Phrases only add
        captions, which run one after another, so they do not count."""
        height, width = _largest_input_hw(self.image_processor.size)
        config = self.config
        backbone_width = getattr(config.backbone_config, "embed_dim", 96)
        tokens = sum((height // s) * (width // s) for s in (8, 16, 32, 64))
        pixels = 3 * height * width * (1 + 4)
        backbone = 12 * (height // 4) * (width // 4) * backbone_width * 4
        encoder = tokens * (12 * config.d_model + 2 * config.encoder_ffn_dim) * 4
        fusion = 4 * config.encoder_attention_heads * tokens * self.max_text_len * 4
        return pixels + backbone + encoder + fusion

    # ---- grounding ------------------------------------------------------------------------------
    def encode_phrases(self, phrases: Sequence[str], measure: Measure = no_measure) -> EncodedPhrases:
        """Pack phrases into captions; features are a tuple of :class:`Caption`."""
        with measure("text"):
            captions, warnings = pack_captions(self.tokenizer, phrases, self.max_text_len)
            captions = tuple(caption.to(self.device) for caption in captions)
        return EncodedPhrases(texts=tuple(phrases), features=captions, warnings=warnings)

    def predict(
        self,
        batch: ImageBatch,
        phrases: EncodedPhrases,
        *,
        postprocess: PostProcessConfig,
        pairs: Sequence[Sequence[int]] | None = None,
        measure: Measure = no_measure,
    ) -> list[Groundings]:
        num_images = len(batch.indices)
        if num_images == 0:
            return []
        everything = frozenset(range(len(phrases.texts)))
        wanted = [everything] * num_images if pairs is None else [frozenset(ids) for ids in pairs]
        sizes_wh = batch.sizes_wh.to(self.device)  # [B, 2]
        found: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        for image_ids, pixels in same_size_groups(batch.pixels):
            pixels = pixels.to(self.device, non_blocking=True)  # [G, 3, H, W]
            for caption in phrases.features:
                rows = [g for g, b in enumerate(image_ids) if wanted[b].intersection(caption.phrase_ids)]
                if not rows:
                    continue
                pred_boxes, logits = self.raw_outputs(pixels[rows], caption, measure)
                with torch.inference_mode(), measure("postprocess"):
                    row_images = [image_ids[g] for g in rows]
                    boxes_xyxy, scores = phrase_detections(
                        pred_boxes, logits, caption.spans, sizes_wh[row_images]
                    )  # [R, Q, 4] pixels, [R, P_c, Q]
                    chosen = [
                        (r, k, b, p)
                        for r, b in enumerate(row_images)
                        for k, p in enumerate(caption.phrase_ids)
                        if p in wanted[b]
                    ]
                    r_index = torch.tensor([r for r, _, _, _ in chosen], device=self.device)
                    k_index = torch.tensor([k for _, k, _, _ in chosen], device=self.device)
                    selected = select_detections(boxes_xyxy[r_index], scores[r_index, k_index], postprocess)
                    for (_, _, b, p), result in zip(chosen, selected, strict=True):
                        found[(b, p)] = result
        with measure("postprocess"):
            return Groundings.from_pairs(((b, p, *found[(b, p)]) for b, p in sorted(found)), num_images)

    def raw_outputs(
        self, pixels: torch.Tensor, caption: Caption, measure: Measure = no_measure
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward of ``[R, 3, H, W]`` same-size processed images with one caption.

        Returns:
            ``pred_boxes`` ``[R, Q, 4]`` cxcywh in [0, 1] of each image and ``logits`` ``[R, Q, T]``
            per token (``T = max_text_len``, ``-inf`` past the caption), float32 on :attr:`device`.
        """
        rows = len(pixels)
        with torch.inference_mode(), autocast(self.device, self.bf16), measure("model"):
            outputs = self.model(
                pixel_values=pixels.to(self.device),
                input_ids=caption.input_ids.repeat(rows, 1),
                attention_mask=caption.attention_mask.repeat(rows, 1),
                token_type_ids=caption.token_type_ids.repeat(rows, 1),
            )
        return outputs.pred_boxes.float(), outputs.logits.float()

    # ---- for people -----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Config, parameter counts and the source of each part (``vgtool info``)."""
        inner = self.model.model

        def count(module: torch.nn.Module) -> dict[str, int]:
            params = list(module.parameters())
            return {
                "total": sum(p.numel() for p in params),
                "trainable": sum(p.numel() for p in params if p.requires_grad),
            }

        total, vision, text = count(self.model), count(inner.backbone), count(inner.text_backbone)
        source, weights = self.ref.spec, "stored in the model folder"
        return {
            "path": str(self.ref.folder),
            "source": self.ref.spec,
            "architecture": self.ref.model_type,
            "config_hash": self.identity()["model_config"],
            "parameters": total,
            "default_threshold": self.default_threshold,
            "parts": {
                "vision": {**vision, "source": source, "weights": weights},
                "text": {**text, "source": source, "weights": weights},
                "fusion": {
                    "total": total["total"] - vision["total"] - text["total"],
                    "trainable": total["trainable"] - vision["trainable"] - text["trainable"],
                    "source": f"{source} (encoder, decoder, heads)",
                    "weights": weights,
                },
            },
            "config": json.loads(self.model.config.to_json_string()),
        }


# ---- phrases -> captions ------------------------------------------------------------------------
def clean_phrase(text: str) -> str:
    """As the processor prepares labels: trimmed and lowercased; trailing periods go (the caption
    adds its own, and ``.`` is a delimiter token)."""
    return text.strip().lower().rstrip(". ")


def pack_captions(
    tokenizer: Any, phrases: Sequence[str], max_len: int
) -> tuple[tuple[Caption, ...], tuple[str, ...]]:
    """Pack phrases, in order, into as few captions of at most ``max_len`` tokens as fit.

    Lengths are measured by tokenising the candidate caption itself. A phrase too long for a
    caption of its own is cut at a token boundary; a phrase with no tokens gets no caption; each
    says so in a warning.

    Returns:
        ``(captions, warnings)``; caption tensors are on the CPU.
    """
    warnings: list[str] = []
    pieces: list[str] = []
    for phrase in phrases:
        piece = clean_phrase(phrase)
        if piece and _caption_length(tokenizer, [piece]) > max_len:
            piece = _cut(tokenizer, piece, max_len)
            warnings.append(
                f"phrase {phrase[:60]!r}... is longer than the model's {max_len} tokens; "
                f"cut to {len(piece)} characters"
            )
        pieces.append(piece)
    groups: list[list[int]] = []
    for i, piece in enumerate(pieces):
        if not piece:
            continue
        if not groups or _caption_length(tokenizer, [pieces[j] for j in groups[-1]] + [piece]) > max_len:
            groups.append([])
        groups[-1].append(i)
    captions = [_tokenize_caption(tokenizer, [(i, pieces[i]) for i in group]) for group in groups]
    placed = {p for caption in captions for p in caption.phrase_ids}
    warnings.extend(
        f"phrase {phrase[:60]!r} has no tokens the model can read; it gets no boxes"
        for i, phrase in enumerate(phrases)
        if i not in placed
    )
    return tuple(captions), tuple(warnings)


def _caption_text(pieces: Sequence[str]) -> str:
    return SEPARATOR.join(pieces) + "."


def _caption_length(tokenizer: Any, pieces: Sequence[str]) -> int:
    return len(tokenizer(_caption_text(pieces))["input_ids"])


def _cut(tokenizer: Any, piece: str, max_len: int) -> str:
    """The longest prefix of ``piece``, at a token boundary, whose caption fits in ``max_len``."""
    offsets = tokenizer(piece, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for keep in range(min(len(offsets), max_len - 3), 0, -1):  # [CLS], "." and [SEP] take 3
        prefix = piece[: offsets[keep - 1][1]].rstrip(". ")
        if prefix and _caption_length(tokenizer, [prefix]) <= max_len:
            return prefix
    return ""


def _tokenize_caption(tokenizer: Any, items: Sequence[tuple[int, str]]) -> Caption:
    """Tokenise ``"p1. p2."`` and find each phrase's tokens from its characters (as MDETR does:
    the tokens of its first and last characters bound its span); a phrase none of whose
    characters became a token is left out."""
    char_spans, position = [], 0
    for _, piece in items:
        char_spans.append((position, position + len(piece)))
        position += len(piece) + len(SEPARATOR)
    text = _caption_text([piece for _, piece in items])
    encoding = tokenizer(text, return_tensors="pt", return_token_type_ids=True)
    phrase_ids, spans = [], []
    for (phrase_id, _), (start, end) in zip(items, char_spans, strict=True):
        tokens = [encoding.char_to_token(0, c) for c in range(start, end)]
        tokens = [t for t in tokens if t is not None]
        if tokens:
            phrase_ids.append(phrase_id)
            spans.append((min(tokens), max(tokens) + 1))
    return Caption(
        text=text,
        input_ids=encoding["input_ids"],
        attention_mask=encoding["attention_mask"],
        token_type_ids=encoding["token_type_ids"],
        phrase_ids=tuple(phrase_ids),
        spans=tuple(spans),
    )


# ---- model outputs -> detections ----------------------------------------------------------------
def phrase_detections(
    pred_boxes: torch.Tensor, logits: torch.Tensor, spans: Sequence[tuple[int, int]], sizes_wh: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes in pixels and each phrase's score for each query.

    Args:
        pred_boxes: ``[R, Q, 4]`` cxcywh in [0, 1] of each image.
        logits: ``[R, Q, T]`` per-token logits (``-inf`` past the caption).
        spans: per phrase, its tokens ``[start, end)``.
        sizes_wh: ``[R, 2]`` displayed width and height.

    Returns:
        ``boxes_xyxy`` ``[R, Q, 4]`` pixels clipped to the image, and ``scores`` ``[R, P, Q]``: the
        highest sigmoid of a phrase's token logits.
    """
    probs = logits.sigmoid()  # [R, Q, T]
    scores = torch.stack([probs[..., start:end].amax(-1) for start, end in spans], dim=1)  # [R, P, Q]
    width, height = sizes_wh[:, None, 0], sizes_wh[:, None, 1]  # [R, 1] each
    boxes_xyxy = box_ops.scale_normalized(box_ops.cxcywh_to_xyxy(pred_boxes), width, height)
    return box_ops.clip_xyxy(boxes_xyxy, width, height), scores


def _largest_input_hw(size: Any) -> tuple[int, int]:
    """The largest ``(height, width)`` an image processor's ``size`` lets through."""
    field = (lambda key: size.get(key)) if isinstance(size, dict) else (lambda key: getattr(size, key, None))
    for short, long in (("shortest_edge", "longest_edge"), ("max_height", "max_width"), ("height", "width")):
        if field(short) and field(long):
            return int(field(short)), int(field(long))
    if field("shortest_edge"):
        edge = int(field("shortest_edge"))
        return edge, 2 * edge
    return 800, 1333
