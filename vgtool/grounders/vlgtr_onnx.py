"""An exported vgtool checkpoint run by ONNX Runtime (:mod:`vgtool.onnx_export.vlgtr` writes it).

The same split as the torch grounder: each image through the image graph once, each phrase through
the text graph once per run, all (image, phrase) pairs of a batch through the decode graph in chunks
of at most :data:`~vgtool.grounders.vlgtr.MAX_PAIRS_PER_DECODE`, and the same post-processing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vgtool.data.image_dataset import ImageBatch
from vgtool.data.preprocess import PreprocessConfig, resize_to_input
from vgtool.data.tokenize import PhraseTokenizer
from vgtool.errors import CheckpointError
from vgtool.grounders.base import EncodedPhrases, Measure, ModelKey, no_measure
from vgtool.grounders.vlgtr import MAX_PAIRS_PER_DECODE, pair_index
from vgtool.groundings import Groundings
from vgtool.models.postprocess import PostProcess, PostProcessConfig
from vgtool.onnx_runtime.folder import OnnxManifest
from vgtool.onnx_runtime.runtime_info import onnx_description, onnx_identity, runtime_settings
from vgtool.onnx_runtime.session import open_sessions, run

# The graphs' names and inputs and outputs (see vgtool.onnx_export.vlgtr, which writes them).
IMAGE_INPUTS = ("pixels",)
IMAGE_OUTPUTS = ("image_tokens", "image_keys")
TEXT_INPUTS = ("input_ids", "attention_mask")
TEXT_OUTPUTS = ("text_tokens", "text_keys", "text_valid", "text_pooled")
DECODE_INPUTS = (*IMAGE_OUTPUTS, *TEXT_OUTPUTS, "image_index", "text_index")
DECODE_OUTPUTS = ("pred_logits", "pred_boxes")
GRAPHS = {"image": "image.onnx", "text": "text.onnx", "decode": "decode.onnx"}
TOKENIZER_DIR = "tokenizer"


class OnnxVLGTRGrounder:
    """The three graphs of an exported checkpoint, in ONNX Runtime sessions.

    Attributes:
        folder: the exported folder; ``manifest``: its ``onnx.json``.
        sessions: graph role (``image``, ``text``, ``decode``) -> ``InferenceSession``.
    """

    def __init__(
        self,
        folder: Path,
        manifest: OnnxManifest,
        sessions: dict[str, Any],
        tokenizer: PhraseTokenizer,
        device: torch.device,
    ):
        extra = manifest.extra
        self.folder, self.manifest, self.sessions, self.tokenizer = folder, manifest, sessions, tokenizer
        self.family = manifest.family
        self.source = folder
        self.device = device
        self.preprocess = PreprocessConfig(
            image_size=int(extra["image_size"]), mean=tuple(extra["mean"]), std=tuple(extra["std"])
        )
        self.image_transform = functools.partial(resize_to_input, config=self.preprocess)
        self.default_threshold = float(extra["default_threshold"])
        self.decode_inputs = frozenset(i.name for i in sessions["decode"].get_inputs())

    @classmethod
    def load(
        cls, folder: Path, manifest: OnnxManifest, *, device: torch.device, threads: int | None = None
    ) -> OnnxVLGTRGrounder:
        """Open the folder's graphs on ``device`` (CUDA through onnxruntime's CUDA provider where
        installed, else CPU) and its tokenizer."""
        ios = {
            "image": (IMAGE_INPUTS, IMAGE_OUTPUTS),
            "text": (TEXT_INPUTS, TEXT_OUTPUTS),
            # a family's decoder may leave an input unused (two-stage VL-GTR reads only the image
            # keys); the exporter then drops it, so only the pair indices are required
            "decode": (("image_index", "text_index"), DECODE_OUTPUTS),
        }
        sessions = open_sessions(folder, manifest.graphs, ios, device_type=device.type, threads=threads)
        return cls(
            folder, manifest, sessions, _load_tokenizer(folder, int(manifest.extra["max_length"])), device
        )

    @classmethod
    def key(cls, folder: Path, manifest: OnnxManifest) -> ModelKey:
        """Identity and threshold from the manifest, without opening the graphs."""
        return ModelKey(
            source=str(folder),
            identity=onnx_identity(manifest),
            default_threshold=float(manifest.extra["default_threshold"]),
        )

    # ---- what the run records -------------------------------------------------------------------
    def identity(self) -> dict[str, str]:
        return onnx_identity(self.manifest)

    def settings(self) -> dict[str, Any]:
        return runtime_settings(self.sessions, self.manifest)

    def per_image_memory_bytes(self, num_phrases: int) -> int:
        """As the torch grounder's estimate: pixels, the backbone's live activations, and the
        decoder's per-pair activations."""
        extra = self.manifest.extra
        side, tokens, width = int(extra["image_size"]), int(extra["num_image_tokens"]), int(extra["d_model"])
        return (
            3 * side * side * 5
            + 16 * tokens * max(width, 256) * 4
            + num_phrases * int(extra["decode_bytes_per_pair"])
        )

    # ---- grounding ------------------------------------------------------------------------------
    def encode_phrases(self, phrases: Sequence[str], measure: Measure = no_measure) -> EncodedPhrases:
        """Tokenise and run the text graph; features are the four text memory arrays."""
        limit = self.tokenizer.max_length
        warnings = tuple(
            f"phrase {text[:60]!r}... is longer than {limit} tokens; truncated"
            for text in self.tokenizer.truncated(phrases)
        )
        with measure("text"):
            tokens = self.tokenizer(phrases)
            feeds = {name: tokens[name].numpy().astype(np.int64) for name in TEXT_INPUTS}
            memory = run(self.sessions["text"], feeds, TEXT_OUTPUTS)
        return EncodedPhrases(
            texts=tuple(phrases), features=dict(zip(TEXT_OUTPUTS, memory, strict=True)), warnings=warnings
        )

    def raw_outputs(
        self,
        pixels: np.ndarray,
        phrases: EncodedPhrases,
        image_index: torch.Tensor,
        text_index: torch.Tensor,
        measure: Measure = no_measure,
    ) -> dict[str, torch.Tensor]:
        """``[B, 3, S, S]`` uint8 pixels and K pairs -> ``pred_logits`` ``[K, Q, 2]`` and
        ``pred_boxes`` ``[K, Q, 4]`` (cxcywh in [0, 1]), float32 CPU tensors."""
        with measure("backbone"):
            image = dict(
                zip(
                    IMAGE_OUTPUTS, run(self.sessions["image"], {"pixels": pixels}, IMAGE_OUTPUTS), strict=True
                )
            )
        chunks = []
        with measure("decoder"):
            for start in range(0, len(image_index), MAX_PAIRS_PER_DECODE):
                part = slice(start, start + MAX_PAIRS_PER_DECODE)
                feeds = {
                    **image,
                    **phrases.features,
                    "image_index": image_index[part].numpy().astype(np.int64),
                    "text_index": text_index[part].numpy().astype(np.int64),
                }
                used = {name: value for name, value in feeds.items() if name in self.decode_inputs}
                chunks.append(run(self.sessions["decode"], used, DECODE_OUTPUTS))
        return {
            name: torch.from_numpy(np.concatenate([chunk[i] for chunk in chunks])).float()
            for i, name in enumerate(DECODE_OUTPUTS)
        }

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
        pixels = np.ascontiguousarray(batch.pixels.cpu().numpy(), dtype=np.uint8)
        outputs = self.raw_outputs(pixels, phrases, image_index, text_index, measure)
        with measure("postprocess"):
            per_pair = PostProcess(postprocess)(outputs, batch.sizes_wh[image_index])
            found = zip(image_index.tolist(), text_index.tolist(), per_pair, strict=True)
            return Groundings.from_pairs(((b, p, *rest) for b, p, rest in found), num_images)

    # ---- for people -----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The graphs, the source model's domain and metadata as stored at export (``vgtool info``)."""
        extra = self.manifest.extra
        description = onnx_description(
            self.folder,
            self.manifest,
            default_threshold=self.default_threshold,
            config=extra.get("config") or {},
        )
        description["architecture"] = f"{extra.get('architecture', self.family)} (ONNX Runtime)"
        description["domain"] = extra.get("domain")
        description["meta"] = {**(extra.get("meta") or {}), **description["meta"]}
        return description


def _load_tokenizer(folder: Path, max_length: int) -> PhraseTokenizer:
    from transformers import AutoTokenizer

    from vgtool.models.hub import quiet_transformers

    quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder / TOKENIZER_DIR))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder / TOKENIZER_DIR}: no usable tokenizer ({err})") from None
    return PhraseTokenizer(tokenizer, max_length)
