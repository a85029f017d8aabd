"""OWLv2 and OWL-ViT (Hugging Face transformers) as a :class:`~vgtool.grounders.base.Grounder`.

OWL scores every image patch against every phrase: each patch predicts one box from the image
alone, and, per phrase, a logit from the patch's class embedding and the phrase's text embedding.
So the text tower runs once per run (:meth:`OwlGrounder.encode_phrases` keeps the normalised,
projected text embeddings that ``forward`` would feed its class head), each batch of images goes
through the vision tower once (``image_embedder``), and the model's own ``class_predictor`` and
``box_predictor`` heads score all phrases at once. A phrase's logits do not depend on the other
phrases, so every image is scored against every phrase and ``pairs`` only picks columns: no query
padding, hence none of transformers' padded-query trouble (its ``forward`` masks a query only when
its first token id is 0, which a padded CLIP sequence never has).

Boxes: OWLv2's processor pads each image at the bottom and right to a square before resizing, so
its normalised boxes are relative to that square: they are scaled by ``max(w, h)`` of the displayed
image and clipped to it (boxes then under a pixel across, which lay in the padding, are dropped).
OWL-ViT resizes without padding: its boxes scale by ``(w, h)``. Scores are
the sigmoid of the class logits, as transformers' ``post_process_object_detection`` computes them,
but for every phrase rather than only each box's best one.

The model is called in two places only, :meth:`OwlGrounder.embed_text` (the text tower) and
:meth:`OwlGrounder.raw_outputs` (the vision tower and heads); the ONNX Runtime grounder
(:mod:`vgtool.grounders.owl_onnx`) replaces those two with graphs and keeps everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vgtool import box_ops
from vgtool.data.image_dataset import ImageBatch
from vgtool.device import autocast
from vgtool.grounders.base import EncodedPhrases, Measure, ModelKey, no_measure
from vgtool.grounders.hf import (
    HFModelRef,
    ImageProcessorTransform,
    count_parameters,
    load_pretrained,
    same_size_groups,
)
from vgtool.groundings import Groundings
from vgtool.models.postprocess import PostProcessConfig, select_detections

# model_type -> (transformers model class, processor class, whether images are padded to a square)
ARCHITECTURES: dict[str, tuple[str, str, bool]] = {
    "owlv2": ("Owlv2ForObjectDetection", "Owlv2Processor", True),
    "owlvit": ("OwlViTForObjectDetection", "OwlViTProcessor", False),
}
# Starting points, not calibrated here (no real weights offline); `--threshold` overrides them.
# OWL-ViT: 0.1, transformers' post-processing default and the value of OWL-ViT's demos (fine for
# COCO-style multi-class queries; with single queries it gives many false positives, see
# google-research/scenic#657). vgtool scores each phrase on its own (transformers keeps a box only
# under its best phrase), which is the single-query case, so OWLv2 starts higher, at 0.3 (its
# model card's example objects score 0.61 and 0.67).
DEFAULT_THRESHOLDS: dict[str, float] = {"owlv2": 0.3, "owlvit": 0.1}
# Elements of the [pairs, n, n] IoU tensor that NMS may build at once (n: boxes over threshold).
# Boxes clipped to less than this many pixels across are dropped: with OWLv2 they are boxes that lie
# almost wholly in the padding (the padded square's patches predict boxes there too).
MIN_SIDE_PX = 1.0


class OwlGrounder:
    """An OWLv2 or OWL-ViT model and its processor on one device.

    Attributes:
        model: ``Owlv2ForObjectDetection`` or ``OwlViTForObjectDetection``, in eval mode.
        config: its config (``Owlv2Config`` or ``OwlViTConfig``).
        processor: the matching processor (tokenizer and image processor).
        ref: where the model came from.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        ref: HFModelRef,
        device: torch.device,
        *,
        bf16: bool,
        config: Any | None = None,
    ):
        """``config`` defaults to ``model.config``; a runtime that runs exported graphs instead of
        the torch model passes ``model=None`` and the config alone."""
        self.model = model
        self.config = model.config if config is None else config
        self.processor = processor
        self.ref = ref
        self.family = ref.model_type
        self.source = ref.spec
        self.device = device
        self.bf16 = bf16
        self.compiled = False
        self.pads_to_square = ARCHITECTURES[ref.model_type][2]
        self.default_threshold = DEFAULT_THRESHOLDS[ref.model_type]
        self.image_transform = ImageProcessorTransform(processor.image_processor)

    @classmethod
    def load(
        cls, ref: HFModelRef, *, device: torch.device, bf16: bool | None = None, compile_model: bool = False
    ) -> OwlGrounder:
        """Load the model and processor from ``ref.folder`` and put the model on ``device``."""
        from vgtool.torchvision_compat import ensure_torchvision_importable

        ensure_torchvision_importable()  # before transformers imports its image processing
        import transformers

        if ref.model_type not in ARCHITECTURES:
            raise ValueError(f"not an OWL model type: {ref.model_type!r}")
        model_name, processor_name, _ = ARCHITECTURES[ref.model_type]
        processor = load_pretrained(getattr(transformers, processor_name), ref)
        model = load_pretrained(getattr(transformers, model_name), ref).eval().to(device)
        use_bf16 = device.type == "cuda" if bf16 is None else bf16
        grounder = cls(model, processor, ref, device, bf16=use_bf16)
        if compile_model:  # the vision tower is nearly all the work; the heads are small
            vision = grounder.base_model.vision_model
            vision.forward = torch.compile(vision.forward)
            grounder.compiled = True
        return grounder

    @property
    def base_model(self) -> Any:
        """The CLIP-like ``Owlv2Model``/``OwlViTModel`` inside the detector."""
        return getattr(self.model, self.model.base_model_prefix)

    @property
    def max_text_length(self) -> int:
        """Tokens per phrase, with start and end tokens (16 for the released checkpoints)."""
        return min(self.processor.tokenizer.model_max_length, self.config.text_config.max_position_embeddings)

    @classmethod
    def key(cls, ref: HFModelRef) -> ModelKey:
        """Identity and threshold without loading the weights."""
        return ModelKey(
            source=ref.spec, identity=ref.identity(), default_threshold=DEFAULT_THRESHOLDS[ref.model_type]
        )

    # ---- what the run records -------------------------------------------------------------------
    def identity(self) -> dict[str, str]:
        return self.ref.identity()

    def settings(self) -> dict[str, Any]:
        return {
            "bf16": self.bf16,
            "compiled": self.compiled,
            "image_processor": type(self.processor.image_processor).__name__,
            "input_size": self.config.vision_config.image_size,
        }

    def per_image_memory_bytes(self, num_phrases: int) -> int:
        """Input pixels (float32, and the processor's padded copy), the vision tower's live
        activations (about 16 tensors of tokens x width, one layer's attention matrix) and, per
        phrase, the logits, boxes and selection tensors over every patch."""
        vision = self.config.vision_config
        side = vision.image_size
        patches = (side // vision.patch_size) ** 2
        tokens = patches + 1
        pixels = 3 * side * side * 4 * 2
        tower = 16 * tokens * vision.hidden_size * 4 + vision.num_attention_heads * tokens * tokens * 4
        heads = 8 * patches * vision.hidden_size * 4
        return pixels + tower + heads + num_phrases * patches * 4 * 12

    # ---- grounding ------------------------------------------------------------------------------
    def encode_phrases(self, phrases: Sequence[str], measure: Measure = no_measure) -> EncodedPhrases:
        """Run the text tower once; features are the ``[P, D]`` unit-norm projected embeddings the
        class head compares patches with (``forward``'s ``query_embeds``)."""
        texts = tuple(phrases)
        if not texts:
            return EncodedPhrases(texts=(), features=torch.zeros(0, self.config.projection_dim))
        tokenizer, limit = self.processor.tokenizer, self.max_text_length
        lengths = [len(ids) for ids in tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]]
        warnings = tuple(
            f"phrase {text[:60]!r}... is longer than {limit} tokens; truncated"
            for text, length in zip(texts, lengths, strict=True)
            if length > limit
        )
        with torch.inference_mode(), measure("text"):
            # as the processor pads them: to max_length, so the embeddings are the forward's own
            tokens = tokenizer(
                list(texts), padding="max_length", truncation=True, max_length=limit, return_tensors="pt"
            )
            query_embeds = self.embed_text(tokens["input_ids"], tokens["attention_mask"])
        return EncodedPhrases(texts=texts, features=query_embeds, warnings=warnings)

    def predict(
        self,
        batch: ImageBatch,
        phrases: EncodedPhrases,
        *,
        postprocess: PostProcessConfig,
        pairs: Sequence[Sequence[int]] | None = None,
        measure: Measure = no_measure,
    ) -> list[Groundings]:
        num_images, num_phrases = len(batch.indices), len(phrases.texts)
        if num_images == 0:
            return []
        if num_phrases == 0:
            return [Groundings.empty() for _ in range(num_images)]
        pairs = [list(range(num_phrases))] * num_images if pairs is None else [list(ids) for ids in pairs]
        image_index = [b for b, ids in enumerate(pairs) for _ in ids]
        text_index = [p for ids in pairs for p in ids]
        if not image_index:
            return [Groundings.empty() for _ in range(num_images)]
        logits, boxes_cxcywh = [], []
        with torch.inference_mode():
            for images, pixels in same_size_groups(batch.pixels):
                group_logits, group_boxes = self.raw_outputs(pixels, phrases.features, measure)
                logits.append((images, group_logits))
                boxes_cxcywh.append((images, group_boxes))
        with measure("postprocess"), torch.inference_mode():
            logits_all = _ungroup(logits, num_images)  # [B, N, P]
            boxes_all = _ungroup(boxes_cxcywh, num_images)  # [B, N, 4] cxcywh in [0, 1]
            image_ids = torch.tensor(image_index, device=logits_all.device)
            text_ids = torch.tensor(text_index, device=logits_all.device)
            scores = logits_all[image_ids, :, text_ids].sigmoid()  # [K, N]
            boxes_xyxy = self._to_pixels(boxes_all, batch.sizes_wh.to(boxes_all.device))[image_ids]
            per_pair = select_detections(boxes_xyxy, scores, postprocess)
            return Groundings.from_pairs(
                ((b, p, *found) for b, p, found in zip(image_index, text_index, per_pair, strict=True)),
                num_images,
            )

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The text tower: ``[P, L]`` token ids and mask, padded to :attr:`max_text_length` ->
        ``[P, D]`` float32 unit-norm query embeddings (:func:`text_query_embeds`)."""
        return text_query_embeds(
            self.base_model, input_ids.to(self.device), attention_mask.to(self.device)
        ).float()

    def raw_outputs(
        self, pixels: torch.Tensor, query_embeds: torch.Tensor, measure: Measure = no_measure
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The vision tower and heads: ``[B, 3, S, S]`` processed images and ``[P, D]`` query
        embeddings -> logits ``[B, N, P]`` of the N patches for the P phrases, and boxes
        ``[B, N, 4]`` cxcywh in [0, 1] of the processed (for OWLv2: padded-square) image, both
        float32 on :attr:`device`."""
        pixels = pixels.to(self.device, non_blocking=True)
        with measure("backbone"), autocast(self.device, self.bf16):
            feature_map, _ = self.model.image_embedder(pixel_values=pixels)  # [B, h, w, D]
        # The heads (the "decoder" stage) are small: they run in float32 even under bf16, so the
        # boxes and scores keep their precision.
        with measure("decoder"), torch.autocast(self.device.type, enabled=False):
            logits, boxes_cxcywh = patch_predictions(
                self.model, feature_map.float(), query_embeds.to(self.device)
            )
        return logits.float(), boxes_cxcywh.float()

    def _to_pixels(self, boxes_cxcywh: torch.Tensor, sizes_wh: torch.Tensor) -> torch.Tensor:
        """``[B, N, 4]`` cxcywh in [0, 1] -> xyxy pixels of each displayed image, clipped to it;
        boxes left under :data:`MIN_SIDE_PX` across get no area (selection drops them)."""
        width, height = sizes_wh[:, None, 0], sizes_wh[:, None, 1]  # [B, 1] each
        boxes_xyxy = box_ops.cxcywh_to_xyxy(boxes_cxcywh)
        if self.pads_to_square:  # relative to the square the image was padded to
            side = torch.maximum(width, height)
            boxes_xyxy = box_ops.scale_normalized(boxes_xyxy, side, side)
        else:
            boxes_xyxy = box_ops.scale_normalized(boxes_xyxy, width, height)
        boxes_xyxy = box_ops.clip_xyxy(boxes_xyxy, width, height)
        sliver = (boxes_xyxy[..., 2:] - boxes_xyxy[..., :2] < MIN_SIDE_PX).any(-1, keepdim=True)  # [B, N, 1]
        return torch.where(sliver, boxes_xyxy[..., :2].repeat(1, 1, 2), boxes_xyxy)

    # ---- for people -----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Config, parameter counts and sources (``vgtool info``)."""
        base = self.base_model
        origin = f"hf:{self.ref.repo_id}@{self.ref.revision}" if self.ref.repo_id else str(self.ref.folder)
        towers = {
            "vision": [base.vision_model, base.visual_projection],
            "text": [base.text_model, base.text_projection],
        }
        parts = {name: count_parameters(modules, origin) for name, modules in towers.items()}
        total = count_parameters([self.model], origin)
        parts["heads"] = {
            **total,
            "total": total["total"] - sum(p["total"] for p in parts.values()),
            "trainable": total["trainable"] - sum(p["trainable"] for p in parts.values()),
        }
        return {
            "path": str(self.ref.folder),
            "source": self.ref.spec,
            "architecture": self.family,
            "config_hash": self.identity()["model_config"],
            "parameters": {"total": total["total"], "trainable": total["trainable"]},
            "default_threshold": self.default_threshold,
            "parts": parts,
            "config": self.model.config.to_dict(),
        }


def text_query_embeds(base_model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The text tower as ``forward`` feeds its class head.

    Args:
        base_model: the ``Owlv2Model``/``OwlViTModel`` inside the detector.
        input_ids, attention_mask: ``[P, L]``, padded to the model's length as the processor pads.

    Returns:
        ``[P, D]`` projected text embeddings, scaled to unit norm (``forward``'s ``query_embeds``).
    """
    text = base_model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
    query_embeds = getattr(text, "pooler_output", text)  # [P, D] (a tensor before transformers 5)
    return query_embeds / torch.linalg.norm(query_embeds, ord=2, dim=-1, keepdim=True)


def patch_predictions(
    model: Any, feature_map: torch.Tensor, query_embeds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The detector's class and box heads on every patch, for every phrase.

    Args:
        model: ``Owlv2ForObjectDetection`` or ``OwlViTForObjectDetection``.
        feature_map: ``[B, h, w, D]`` from ``model.image_embedder``.
        query_embeds: ``[P, D]`` from :func:`text_query_embeds`.

    Returns:
        ``logits`` ``[B, N, P]`` (``N = h * w`` patches) and ``boxes_cxcywh`` ``[B, N, 4]`` in
        [0, 1] of the processed image.
    """
    image_feats = feature_map.flatten(1, 2)  # [B, N, D]
    queries = query_embeds[None].expand(feature_map.shape[0], -1, -1)  # [B, P, D]
    logits, _ = model.class_predictor(image_feats, queries, None)
    boxes_cxcywh = model.box_predictor(image_feats, feature_map)
    return logits, boxes_cxcywh


def _ungroup(parts: list[tuple[list[int], torch.Tensor]], num_images: int) -> torch.Tensor:
    """Per-group ``[b, ...]`` tensors -> one ``[B, ...]`` tensor in image order."""
    if len(parts) == 1:
        return parts[0][1]
    first = parts[0][1]
    out = first.new_empty((num_images, *first.shape[1:]))
    for ids, values in parts:
        out[torch.tensor(ids, device=out.device)] = values
    return out
