"""OWLv2 and OWL-ViT exported to ONNX (:mod:`vgtool.onnx_export.owl`), run by ONNX Runtime.

The same grounder as :class:`~vgtool.grounders.owl.OwlGrounder`, with its two model calls swapped
for the two graphs: tokenising, pairing phrases with images, scaling boxes to pixels and selecting
detections are inherited unchanged. The folder holds the processor files and the config, no torch
weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vgtool.errors import CheckpointError
from vgtool.grounders.base import Measure, ModelKey, no_measure
from vgtool.grounders.hf import HFModelRef, load_pretrained
from vgtool.grounders.owl import ARCHITECTURES, DEFAULT_THRESHOLDS, OwlGrounder
from vgtool.onnx_runtime.folder import OnnxManifest
from vgtool.onnx_runtime.runtime_info import onnx_description, onnx_identity, runtime_settings
from vgtool.onnx_runtime.session import open_sessions, run

# The graphs' names and inputs and outputs (see vgtool.onnx_export.owl, which writes them).
GRAPHS = {"text": "text.onnx", "image": "image.onnx"}
TEXT_INPUTS = ("input_ids", "attention_mask")
TEXT_OUTPUTS = ("query_embeds",)
IMAGE_INPUTS = ("pixel_values", "query_embeds")
IMAGE_OUTPUTS = ("logits", "boxes_cxcywh")


class OnnxOwlGrounder(OwlGrounder):
    """An exported OWL model in ONNX Runtime sessions.

    Attributes:
        sessions: ``text`` and ``image`` ONNX Runtime sessions.
        manifest: the folder's ``onnx.json``.
    """

    def __init__(
        self,
        sessions: dict[str, Any],
        processor: Any,
        config: Any,
        ref: HFModelRef,
        manifest: OnnxManifest,
        device: torch.device,
    ):
        super().__init__(None, processor, ref, device, bf16=False, config=config)
        self.sessions = sessions
        self.manifest = manifest

    @classmethod
    def load(
        cls, folder: Path, manifest: OnnxManifest, *, device: torch.device, threads: int | None = None
    ) -> OnnxOwlGrounder:
        """Open the folder's graphs for ``device`` (CUDA where onnxruntime has it, else the CPU) with
        ``threads`` intra-op threads (default: every core the process may use), and load the
        processor and config saved next to them.

        Raises:
            CheckpointError: a graph is missing, unreadable or not the graph its role needs.
        """
        from vgtool.torchvision_compat import ensure_torchvision_importable

        if manifest.family not in ARCHITECTURES:
            raise CheckpointError(f"{folder}: family {manifest.family!r} is not an OWL model")
        ensure_torchvision_importable()  # before transformers imports its image processing
        import transformers

        ref = HFModelRef(str(folder), folder, None, None, manifest.family)
        model_name, processor_name, _ = ARCHITECTURES[manifest.family]
        config = load_pretrained(getattr(transformers, model_name).config_class, ref)
        processor = load_pretrained(getattr(transformers, processor_name), ref)
        ios = {"text": (TEXT_INPUTS, TEXT_OUTPUTS), "image": (IMAGE_INPUTS, IMAGE_OUTPUTS)}
        sessions = open_sessions(folder, manifest.graphs, ios, device_type=device.type, threads=threads)
        return cls(sessions, processor, config, ref, manifest, device)

    @classmethod
    def key(cls, folder: Path, manifest: OnnxManifest) -> ModelKey:  # type: ignore[override]
        """Identity and threshold from the manifest, without opening the graphs."""
        return ModelKey(
            source=str(folder),
            identity=onnx_identity(manifest),
            default_threshold=DEFAULT_THRESHOLDS[manifest.family],
        )

    # ---- what the run records -------------------------------------------------------------------
    def identity(self) -> dict[str, str]:
        return onnx_identity(self.manifest)

    def settings(self) -> dict[str, Any]:
        return {
            **runtime_settings(self.sessions, self.manifest),
            "image_processor": type(self.processor.image_processor).__name__,
            "input_size": self.config.vision_config.image_size,
        }

    # ---- the two model calls --------------------------------------------------------------------
    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[P, L]`` token ids and mask -> ``[P, D]`` query embeddings (``text.onnx``)."""
        feeds = {
            "input_ids": input_ids.cpu().numpy().astype(np.int64),
            "attention_mask": attention_mask.cpu().numpy().astype(np.int64),
        }
        (query_embeds,) = run(self.sessions["text"], feeds, TEXT_OUTPUTS)
        return torch.from_numpy(query_embeds).to(self.device)

    def raw_outputs(
        self, pixels: torch.Tensor, query_embeds: torch.Tensor, measure: Measure = no_measure
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[B, N, P]`` and boxes ``[B, N, 4]`` cxcywh in [0, 1] (``image.onnx``)."""
        feeds = {
            "pixel_values": np.ascontiguousarray(pixels.cpu().numpy(), dtype=np.float32),
            "query_embeds": np.ascontiguousarray(query_embeds.cpu().numpy(), dtype=np.float32),
        }
        with measure("model"):
            logits, boxes_cxcywh = run(self.sessions["image"], feeds, IMAGE_OUTPUTS)
        return torch.from_numpy(logits).to(self.device), torch.from_numpy(boxes_cxcywh).to(self.device)

    # ---- for people -----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The graphs, their stored values, the source model and the export check."""
        return onnx_description(
            self.ref.folder,
            self.manifest,
            default_threshold=self.default_threshold,
            config=self.config.to_dict(),
        )
