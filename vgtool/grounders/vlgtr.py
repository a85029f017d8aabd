"""vgtool's own checkpoints as a :class:`~vgtool.grounders.base.Grounder`: VL-GTR, and every
trainable family that speaks :class:`~vgtool.models.base.GroundingModel`'s interface (the
text-as-query single-box model among them).

Each image goes through the vision backbone once and each phrase through the text encoder once per
run; all (image, phrase) pairs of a batch are decoded together against those memories, in chunks of
at most :data:`MAX_PAIRS_PER_DECODE`, and postprocessed at once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vgtool.checkpoint import (
    FALLBACK_THRESHOLD,
    config_hash,
    load_checkpoint,
    model_fingerprint,
    model_threshold,
    read_checkpoint_config,
    referenced_parts,
)
from vgtool.data.image_dataset import ImageBatch
from vgtool.data.preprocess import PreprocessConfig, normalize, resize_to_input
from vgtool.device import autocast
from vgtool.grounders.base import EncodedPhrases, Measure, ModelKey, no_measure
from vgtool.groundings import Groundings
from vgtool.models.base import GroundingModel
from vgtool.models.build import is_single_box
from vgtool.models.bundled import DEFAULT_MODEL_DOMAIN, is_default_model
from vgtool.models.config import model_config_dict
from vgtool.models.memory import ImageMemory, TextMemory
from vgtool.models.memory_format import prefers_channels_last
from vgtool.models.postprocess import PostProcess, PostProcessConfig
from vgtool.models.text import phrase_tokenizer

# (image, phrase) pairs per decoder call, to bound activation memory on large batches.
MAX_PAIRS_PER_DECODE = 512
# The uncalibrated default threshold of a single-box model: its one box per phrase is always kept
# (its score is a confidence for ranking, not a "the phrase names nothing here").
SINGLE_BOX_THRESHOLD = 0.0


class VLGTRGrounder:
    """A loaded vgtool checkpoint on one device.

    Attributes:
        family: the checkpoint's architecture (``vlgtr``, ``textquery``, ...).
        net: the model, in eval mode on ``device``.
        source: the checkpoint folder.
        channels_last: whether the backbone runs channels-last (see :func:`prepare_for_inference`).
    """

    def __init__(
        self, net: GroundingModel, source: Path, device: torch.device, *, bf16: bool, channels_last: bool
    ):
        self.family = net.config.architecture
        self.net = net
        self.source = source
        self.device = device
        self.bf16 = bf16
        self.channels_last = channels_last
        self.preprocess = PreprocessConfig.from_model(net)
        self.image_transform = functools.partial(resize_to_input, config=self.preprocess)
        fallback = SINGLE_BOX_THRESHOLD if is_single_box(net.config) else FALLBACK_THRESHOLD
        self.default_threshold = model_threshold(source, fallback)
        self.tokenizer = phrase_tokenizer(net.config.text)

    @classmethod
    def load(
        cls, path: Path, *, device: torch.device, bf16: bool | None = None, compile_model: bool = False
    ) -> VLGTRGrounder:
        """Load a checkpoint folder strictly and make it fast on ``device``."""
        net = load_checkpoint(path, device=device)
        channels_last = prepare_for_inference(net, device, compile_model=compile_model)
        use_bf16 = device.type == "cuda" if bf16 is None else bf16
        return cls(net, Path(path), device, bf16=use_bf16, channels_last=channels_last)

    @classmethod
    def key(cls, path: Path) -> ModelKey:
        """The checkpoint's identity and threshold from its files, without building the model."""
        config, _ = read_checkpoint_config(path)
        fallback = SINGLE_BOX_THRESHOLD if is_single_box(config) else FALLBACK_THRESHOLD
        return ModelKey(
            source=str(path),
            identity={"model": model_fingerprint(path), "model_config": config_hash(config)},
            default_threshold=model_threshold(path, fallback),
        )

    # ---- what the run records -------------------------------------------------------------------
    def identity(self) -> dict[str, str]:
        return {"model": model_fingerprint(self.source), "model_config": config_hash(self.net.config)}

    def settings(self) -> dict[str, Any]:
        return {"bf16": self.bf16, "channels_last": self.channels_last}

    def per_image_memory_bytes(self, num_phrases: int) -> int:
        """Input pixels (uint8 and float), the backbone's live activations (about 16 tensors of
        tokens x width, counting attention and MLP intermediates and the autocast copies) and, per
        phrase, the decoder's pair activations (the model's own estimate)."""
        vision = self.net.vision
        side = vision.image_size
        patch = vision.patch_size or 16
        tokens = (side // patch) ** 2 + vision.num_prefix_tokens
        pixels = 3 * side * side * (1 + 4)
        backbone = 16 * tokens * vision.embed_dim * 4
        return pixels + backbone + num_phrases * self.net.decode_bytes_per_pair(tokens)

    # ---- grounding ------------------------------------------------------------------------------
    def encode_phrases(self, phrases: Sequence[str], measure: Measure = no_measure) -> EncodedPhrases:
        """Tokenise and encode phrases; features are a :class:`TextMemory` of ``[P, T, D]``."""
        limit = self.tokenizer.max_length
        warnings = tuple(
            f"phrase {text[:60]!r}... is longer than {limit} tokens; truncated"
            for text in self.tokenizer.truncated(phrases)
        )
        with torch.inference_mode(), autocast(self.device, self.bf16), measure("text"):
            tokens = {k: v.to(self.device) for k, v in self.tokenizer(phrases).items()}
            memory = self.net.encode_text(tokens["input_ids"], tokens["attention_mask"])
        return EncodedPhrases(texts=tuple(phrases), features=memory, warnings=warnings)

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
        image_index, text_index = pair_index(num_images, num_phrases, pairs)
        with torch.inference_mode(), autocast(self.device, self.bf16):
            pixels = normalize(batch.pixels.to(self.device, non_blocking=True), self.preprocess)
            with measure("backbone"):
                image_memory = self.net.encode_image(pixels)
            with measure("decoder"):
                outputs = decode_pairs(
                    self.net,
                    image_memory,
                    phrases.features,
                    image_index.to(self.device),
                    text_index.to(self.device),
                )
        with measure("postprocess"):
            per_pair = PostProcess(postprocess)(outputs, batch.sizes_wh[image_index])
            pairs_found = zip(image_index.tolist(), text_index.tolist(), per_pair, strict=True)
            return Groundings.from_pairs(((b, p, *found) for b, p, found in pairs_found), num_images)

    # ---- for people -----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Config, parameter counts and the source of each part (``vgtool info``)."""
        net, config = self.net, self.net.config
        referenced = referenced_parts(config)

        def part(module: torch.nn.Module, source: str, name: str) -> dict[str, Any]:
            params = list(module.parameters())
            stored = name not in referenced
            return {
                "total": sum(p.numel() for p in params),
                "trainable": sum(p.numel() for p in params if p.requires_grad),
                "source": source,
                "weights": "stored in checkpoint" if stored else "referenced by name, loaded from source",
            }

        parts = {
            "vision": part(net.vision, config.vision.spec, "vision"),
            "text": part(
                net.text,
                f"transformers:{config.text.name} ({net.text.location_kind}: {net.text.location})",
                "text",
            ),
        }
        total = part(net, "", "")
        parts["decoder"] = {
            "total": total["total"] - parts["vision"]["total"] - parts["text"]["total"],
            "trainable": total["trainable"] - parts["vision"]["trainable"] - parts["text"]["trainable"],
            "source": f"vgtool ({net.head_parts})",
            "weights": "stored in checkpoint",
        }
        _, document = read_checkpoint_config(self.source)
        meta = document.get("meta") or {}
        domain = DEFAULT_MODEL_DOMAIN if is_default_model(self.source) else meta.get("domain")
        return {
            "path": str(self.source),
            "architecture": config.architecture,
            "domain": domain or "what its training data held (not recorded in the checkpoint)",
            "meta": meta,
            "config_hash": config_hash(config),
            "parameters": {"total": total["total"], "trainable": total["trainable"]},
            "default_threshold": self.default_threshold,
            "parts": parts,
            "config": model_config_dict(config),
        }


def pair_index(
    num_images: int, num_phrases: int, pairs: Sequence[Sequence[int]] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[K]`` image and phrase index of each (image, phrase) pair to decode: with ``pairs`` None,
    every phrase in every image, image-major (the decoder's fast layout); else the listed phrases of
    each image."""
    if pairs is None:
        image_index = torch.arange(num_images).repeat_interleave(num_phrases)
        return image_index, torch.arange(num_phrases).repeat(num_images)
    image_index = torch.tensor([b for b, ids in enumerate(pairs) for _ in ids], dtype=torch.long)
    return image_index, torch.tensor([p for ids in pairs for p in ids], dtype=torch.long)


def decode_pairs(
    net: GroundingModel,
    image_memory: ImageMemory,
    text_memory: TextMemory,
    image_index: torch.Tensor,
    text_index: torch.Tensor,
    max_pairs: int = MAX_PAIRS_PER_DECODE,
) -> dict[str, torch.Tensor]:
    """Decode K (image, phrase) pairs in chunks and return float32 CPU tensors.

    Returns:
        ``pred_logits`` ``[K, Q, 2]`` and ``pred_boxes`` ``[K, Q, 4]`` cxcywh in [0, 1].
    """
    chunks = []
    for start in range(0, len(image_index), max_pairs):
        part = slice(start, start + max_pairs)
        out = net.decode(image_memory, text_memory, image_index[part], text_index[part])
        chunks.append({key: out[key].float().cpu() for key in ("pred_logits", "pred_boxes")})
    return {key: torch.cat([chunk[key] for chunk in chunks]) for key in ("pred_logits", "pred_boxes")}


def prepare_for_inference(net: GroundingModel, device: torch.device, *, compile_model: bool = False) -> bool:
    """Make a loaded model fast on ``device``; returns whether its backbone now runs channels-last.

    The vision backbone is switched to channels-last memory where that is faster (see
    :func:`~vgtool.models.memory_format.prefers_channels_last`); the model then converts its input
    images itself. With ``compile_model`` the backbone and the decoder are wrapped in
    ``torch.compile`` (the first batches are slow while it compiles; pays off on long runs).
    """
    channels_last = prefers_channels_last(net, device)
    if channels_last:
        net.use_channels_last()
    if compile_model:
        net.vision.forward = torch.compile(net.vision.forward)
        net.decoder.forward = torch.compile(net.decoder.forward, dynamic=True)
    return channels_last
