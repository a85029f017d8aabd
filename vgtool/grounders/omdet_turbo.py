"""OmDet-Turbo (Hugging Face transformers) as a :class:`~vgtool.grounders.base.Grounder`.

OmDet-Turbo encodes each class name on its own (the CLIP text tower pooled at the end token, then
projected) and a task prompt (``"Detect cat, dog."``, transformers' default, token by token). Its
decoder selects its queries from the image by their best class similarity, so which classes an
image is asked about changes its detections: an image is decoded with exactly its own phrases, as
transformers would decode it alone.

- :meth:`OmDetTurboGrounder.encode_phrases` runs the text tower once per run: the class embeddings
  of all phrases and the task of the whole list.
- :meth:`OmDetTurboGrounder.predict` runs the vision backbone and the hybrid encoder once per batch,
  then the decoder once per group of images asked about the same phrases (one group when ``pairs``
  is None). Images are never decoded with another image's phrases, so classes are never padded
  (transformers pads them with zero embeddings that still score, and an image with fewer classes
  can lose its detections to them). The task of a phrase subset is encoded when first needed.

Scores are ``sigmoid`` of the decoder's class logits for each (query, phrase), boxes are the
decoder's, scaled to the displayed image and clipped, as transformers'
``post_process_grounded_object_detection`` computes them before its own cross-class top-k and NMS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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

# transformers' own default (its post-processing and its docs' example); each (query, phrase) is
# scored independently, so unlike OWL no box is duplicated across phrases by a lower threshold.
# Not calibrated here (no real weights offline); `--threshold` overrides it.
DEFAULT_THRESHOLD = 0.3
# Elements of the [pairs, n, n] IoU tensor that NMS may build at once (n: boxes over threshold).


@dataclass(frozen=True)
class TextFeatures:
    """What the decoder needs of the phrases, for any number of images.

    Attributes:
        classes: ``[P, D]`` projected class embedding of each phrase.
        task: ``[T, 1, H]`` token states of the task prompt of all P phrases.
        task_mask: ``[1, T]`` its attention mask.
    """

    classes: torch.Tensor
    task: torch.Tensor
    task_mask: torch.Tensor


class OmDetTurboGrounder:
    """An OmDet-Turbo model and its processor on one device.

    Attributes:
        model: ``OmDetTurboForObjectDetection``, in eval mode.
        processor: ``OmDetTurboProcessor`` (CLIP tokenizer and DETR image processor).
        ref: where the model came from.
    """

    default_threshold = DEFAULT_THRESHOLD

    def __init__(self, model: Any, processor: Any, ref: HFModelRef, device: torch.device, *, bf16: bool):
        self.model = model
        self.processor = processor
        self.ref = ref
        self.family = ref.model_type
        self.source = ref.spec
        self.device = device
        self.bf16 = bf16
        self.compiled = False
        self.image_transform = ImageProcessorTransform(processor.image_processor)

    @classmethod
    def load(
        cls, ref: HFModelRef, *, device: torch.device, bf16: bool | None = None, compile_model: bool = False
    ) -> OmDetTurboGrounder:
        """Load the model and processor from ``ref.folder`` and put the model on ``device``."""
        from vgtool.torchvision_compat import ensure_torchvision_importable

        ensure_torchvision_importable()  # before transformers imports its image processing
        from transformers import OmDetTurboForObjectDetection, OmDetTurboProcessor

        processor = load_pretrained(OmDetTurboProcessor, ref)
        model = load_pretrained(OmDetTurboForObjectDetection, ref).eval().to(device)
        use_bf16 = device.type == "cuda" if bf16 is None else bf16
        grounder = cls(model, processor, ref, device, bf16=use_bf16)
        if compile_model:  # the image side: the decoder's shapes change with each phrase set
            for module in (model.vision_backbone, model.encoder):
                module.forward = torch.compile(module.forward)
            grounder.compiled = True
        return grounder

    @property
    def max_text_length(self) -> int:
        """Tokens per phrase and per task prompt, with start and end tokens (77)."""
        processor_limit = getattr(self.processor, "text_kwargs", {}).get("max_length", 77)
        return min(processor_limit, self.model.config.text_config.max_position_embeddings)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` of the processed image (640 x 640 for the released checkpoint)."""
        size = self.processor.image_processor.size
        if size.get("height") and size.get("width"):
            return int(size["height"]), int(size["width"])
        side = self.model.config.image_size
        return (side, side) if isinstance(side, int) else (int(side[0]), int(side[1]))

    @classmethod
    def key(cls, ref: HFModelRef) -> ModelKey:
        """Identity and threshold without loading the weights."""
        return ModelKey(source=ref.spec, identity=ref.identity(), default_threshold=DEFAULT_THRESHOLD)

    # ---- what the run records -------------------------------------------------------------------
    def identity(self) -> dict[str, str]:
        return self.ref.identity()

    def settings(self) -> dict[str, Any]:
        return {
            "bf16": self.bf16,
            "bf16_parts": ["vision_backbone", "encoder"] if self.bf16 else [],
            "compiled": self.compiled,
            "image_processor": type(self.processor.image_processor).__name__,
            "input_size": list(self.input_size),
        }

    def per_image_memory_bytes(self, num_phrases: int) -> int:
        """Input pixels, the backbone's live activations at its first stage (about 24 tensors of
        tokens x channels), the encoder's three levels, the decoder's queries and, per phrase, the
        class similarity of every encoder token and the selection tensors over every query."""
        config = self.model.config
        height, width = self.input_size
        stage1 = (height // 4) * (width // 4) * max(1, config.encoder_in_channels[0] // 2)
        levels = sum((height // s) * (width // s) for s in (8, 16, 32))
        queries = config.num_queries
        pixels = 3 * height * width * 4 * 2
        backbone = 24 * stage1 * 4
        encoder = 24 * levels * config.encoder_hidden_dim * 4
        decoder = 32 * queries * max(config.decoder_hidden_dim, config.decoder_dim_feedforward // 4) * 4
        per_phrase = 3 * levels * 4 + 12 * queries * 4
        return pixels + backbone + encoder + decoder + num_phrases * per_phrase

    # ---- grounding ------------------------------------------------------------------------------
    def encode_phrases(self, phrases: Sequence[str], measure: Measure = no_measure) -> EncodedPhrases:
        """Run the text tower once: features are :class:`TextFeatures` of all the phrases."""
        texts = tuple(phrases)
        if not texts:
            return EncodedPhrases(texts=(), features=None)
        limit = self.max_text_length
        lengths = self._token_counts([*texts, _task_prompt(texts)])
        warnings = [
            f"phrase {text[:60]!r}... is longer than {limit} tokens; truncated"
            for text, length in zip(texts, lengths, strict=False)
            if length > limit
        ]
        if lengths[-1] > limit:
            warnings.append(
                f"the task prompt naming all {len(texts)} phrases is longer than {limit} tokens; its end "
                "is cut (each phrase is still encoded whole as its own class)"
            )
        with torch.inference_mode(), measure("text"):
            classes = self.model.language_backbone(self._tokens(texts)["input_ids"], encode_type="class")
            task, task_mask = self._encode_task(texts)
        features = TextFeatures(classes=classes.float(), task=task, task_mask=task_mask)
        return EncodedPhrases(texts=texts, features=features, warnings=tuple(warnings))

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
        everything = tuple(range(num_phrases))
        pairs = [everything] * num_images if pairs is None else [tuple(ids) for ids in pairs]
        tasks = {everything: (phrases.features.task, phrases.features.task_mask)} if num_phrases else {}
        per_image: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # b -> (logits [Q, C], boxes [Q, 4])
        with torch.inference_mode():
            for images, pixels in same_size_groups(batch.pixels):
                asked = [b for b in images if pairs[b]]
                if not asked:
                    continue
                with measure("backbone"), autocast(self.device, self.bf16):
                    pixels = pixels[[images.index(b) for b in asked]].to(self.device, non_blocking=True)
                    states = self.model.encoder(self.model.vision_backbone(pixels), return_dict=True)
                    levels = [level.float() for level in states.extracted_states]  # [b, C, H_l, W_l]
                for ids, rows in _groups_by_phrases([pairs[b] for b in asked]):
                    if ids not in tasks:
                        with measure("text"):
                            tasks[ids] = self._encode_task([phrases.texts[p] for p in ids])
                    with measure("decoder"):
                        logits, boxes_cxcywh = self._decode(
                            [level[rows] for level in levels],
                            phrases.features.classes[list(ids)],
                            *tasks[ids],
                        )
                    for j, row in enumerate(rows):
                        per_image[asked[row]] = (logits[j], boxes_cxcywh[j])
        with measure("postprocess"), torch.inference_mode():
            image_index = [b for b in range(num_images) for _ in pairs[b]]
            text_index = [p for b in range(num_images) for p in pairs[b]]
            if not image_index:
                return [Groundings.empty() for _ in range(num_images)]
            scores = torch.stack(
                [per_image[b][0][:, j] for b in range(num_images) for j in range(len(pairs[b]))]
            ).sigmoid()  # [K, Q]
            boxes_cxcywh = torch.stack([per_image[b][1] for b in image_index])  # [K, Q, 4] in [0, 1]
            sizes_wh = batch.sizes_wh[image_index].to(boxes_cxcywh.device)
            width, height = sizes_wh[:, None, 0], sizes_wh[:, None, 1]  # [K, 1] each
            boxes_xyxy = box_ops.scale_normalized(box_ops.cxcywh_to_xyxy(boxes_cxcywh), width, height)
            boxes_xyxy = box_ops.clip_xyxy(boxes_xyxy, width, height)
            per_pair = select_detections(boxes_xyxy, scores, postprocess)
            return Groundings.from_pairs(
                ((b, p, *found) for b, p, found in zip(image_index, text_index, per_pair, strict=True)),
                num_images,
            )

    def _decode(
        self,
        levels: list[torch.Tensor],
        classes: torch.Tensor,
        task: torch.Tensor,
        task_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder on b images that share C phrases, in float32 (it picks the queries and makes
        the boxes and scores; the backbone and encoder before it carry the bulk of the work).

        Args:
            levels: the encoder's feature maps, ``[b, C_l, H_l, W_l]`` each.
            classes: ``[C, D]`` class embeddings of the phrases.
            task: ``[T, 1, H]`` and ``task_mask`` ``[1, T]``: their task prompt.

        Returns:
            Class logits ``[b, Q, C]`` and boxes ``[b, Q, 4]`` cxcywh in [0, 1].
        """
        num = len(levels[0])
        with torch.autocast(self.device.type, enabled=False):
            out = self.model.decoder(
                levels,
                classes.to(self.device)[:, None].expand(-1, num, -1),  # [C, b, D]
                task.to(self.device).expand(-1, num, -1),  # [T, b, H]
                task_mask.to(self.device).expand(num, -1),  # [b, T]
                return_dict=True,
            )
        return out.decoder_classes[-1].float(), out.decoder_coords[-1].float()

    def _tokens(self, texts: Sequence[str]) -> Any:
        """Tokens as the processor makes them: padded to, and cut at, :attr:`max_text_length`."""
        limit = self.max_text_length
        return self.processor.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=limit, return_tensors="pt"
        ).to(self.device)

    def _token_counts(self, texts: Sequence[str]) -> list[int]:
        encoded = self.processor.tokenizer(list(texts), truncation=False, verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def _encode_task(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``([T, 1, H], [1, T])``: the task prompt of ``texts`` token by token, and its mask."""
        tokens = self._tokens([_task_prompt(texts)])
        task, task_mask = self.model.language_backbone(
            tokens["input_ids"], mask=tokens["attention_mask"], encode_type="task"
        )
        return task.float(), task_mask

    # ---- for people -----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Config, parameter counts and sources (``vgtool info``)."""
        model = self.model
        origin = f"hf:{self.ref.repo_id}@{self.ref.revision}" if self.ref.repo_id else str(self.ref.folder)
        parts = {
            "vision": count_parameters([model.vision_backbone], origin),
            "text": count_parameters([model.language_backbone], origin),
            "detector": count_parameters([model.encoder, model.decoder], origin),
        }
        total = count_parameters([model], origin)
        return {
            "path": str(self.ref.folder),
            "source": self.ref.spec,
            "architecture": self.family,
            "config_hash": self.identity()["model_config"],
            "parameters": {"total": total["total"], "trainable": total["trainable"]},
            "default_threshold": self.default_threshold,
            "parts": parts,
            "config": model.config.to_dict(),
        }


def _task_prompt(texts: Sequence[str]) -> str:
    """transformers' default task for a list of classes."""
    return f"Detect {', '.join(texts)}."


def _groups_by_phrases(pairs: list[tuple[int, ...]]) -> list[tuple[tuple[int, ...], list[int]]]:
    """``(phrase ids, rows)``: the rows of ``pairs`` that ask for the same phrases, in first-seen order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, ids in enumerate(pairs):
        groups.setdefault(ids, []).append(row)
    return list(groups.items())
