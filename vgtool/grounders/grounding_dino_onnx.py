"""Grounding DINO and MM-Grounding-DINO exported to ONNX (:mod:`vgtool.onnx_export.grounding_dino`),
run by ONNX Runtime.

The same grounder as :class:`~vgtool.grounders.grounding_dino.GroundingDinoGrounder`, with its
forward swapped for the graph: packing phrases into captions, tying phrases to tokens, grouping
same-size images and scoring each phrase are inherited unchanged. The folder holds the processor
files and the config, no torch weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vgtool.errors import CheckpointError
from vgtool.grounders.base import Measure, ModelKey, no_measure
from vgtool.grounders.grounding_dino import DEFAULT_THRESHOLD, MODEL_CLASSES, Caption, GroundingDinoGrounder
from vgtool.grounders.hf import HFModelRef, load_pretrained
from vgtool.onnx_runtime.folder import OnnxManifest
from vgtool.onnx_runtime.runtime_info import onnx_description, onnx_identity, runtime_settings
from vgtool.onnx_runtime.session import open_sessions, run

# The graph's name, inputs and outputs (see vgtool.onnx_export.grounding_dino, which writes it).
GRAPHS = {"model": "model.onnx"}
INPUTS = ("pixel_values", "input_ids", "attention_mask", "token_type_ids")
OUTPUTS = ("logits", "pred_boxes")


class OnnxGroundingDinoGrounder(GroundingDinoGrounder):
    """An exported Grounding DINO model in an ONNX Runtime session.

    Attributes:
        session: the ``model`` graph's ONNX Runtime session.
        manifest: the folder's ``onnx.json``.
    """

    def __init__(
        self,
        session: Any,
        processor: Any,
        config: Any,
        ref: HFModelRef,
        manifest: OnnxManifest,
        device: torch.device,
    ):
        super().__init__(None, processor, ref, device, bf16=False, compiled=False, config=config)
        self.session = session
        self.manifest = manifest

    @classmethod
    def load(
        cls, folder: Path, manifest: OnnxManifest, *, device: torch.device, threads: int | None = None
    ) -> OnnxGroundingDinoGrounder:
        """Open the folder's graph for ``device`` (CUDA where onnxruntime has it, else the CPU) with
        ``threads`` intra-op threads (default: every core the process may use), and load the
        processor and config saved next to it.

        Raises:
            CheckpointError: the graph is missing, unreadable or not this family's graph, or the
                tokenizer gives no character offsets.
        """
        from vgtool.torchvision_compat import ensure_torchvision_importable

        if manifest.family not in MODEL_CLASSES:
            raise CheckpointError(f"{folder}: family {manifest.family!r} is not a Grounding DINO model")
        ensure_torchvision_importable()
        import transformers

        ref = HFModelRef(str(folder), folder, None, None, manifest.family)
        processor = load_pretrained(transformers.AutoProcessor, ref)
        if not getattr(processor.tokenizer, "is_fast", False):
            raise CheckpointError(f"{folder}: needs a fast tokenizer (tokenizer.json) for character offsets")
        config = load_pretrained(getattr(transformers, MODEL_CLASSES[manifest.family]).config_class, ref)
        (session,) = open_sessions(
            folder, manifest.graphs, {"model": (INPUTS, OUTPUTS)}, device_type=device.type, threads=threads
        ).values()
        return cls(session, processor, config, ref, manifest, device)

    @classmethod
    def key(cls, folder: Path, manifest: OnnxManifest) -> ModelKey:  # type: ignore[override]
        """Identity and threshold from the manifest, without opening the graphs."""
        return ModelKey(
            source=str(folder), identity=onnx_identity(manifest), default_threshold=DEFAULT_THRESHOLD
        )

    # ---- what the run records -------------------------------------------------------------------
    def identity(self) -> dict[str, str]:
        return onnx_identity(self.manifest)

    def settings(self) -> dict[str, Any]:
        return runtime_settings({"model": self.session}, self.manifest)

    # ---- the model call -------------------------------------------------------------------------
    def raw_outputs(
        self, pixels: torch.Tensor, caption: Caption, measure: Measure = no_measure
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``pred_boxes`` ``[R, Q, 4]`` cxcywh in [0, 1] and ``logits`` ``[R, Q, T]`` (``model.onnx``)."""
        rows = len(pixels)
        feeds = {
            "pixel_values": np.ascontiguousarray(pixels.cpu().numpy(), dtype=np.float32),
            **{
                name: np.repeat(getattr(caption, name).cpu().numpy().astype(np.int64), rows, axis=0)
                for name in ("input_ids", "attention_mask", "token_type_ids")
            },
        }
        with measure("model"):
            logits, pred_boxes = run(self.session, feeds, OUTPUTS)
        return torch.from_numpy(pred_boxes).to(self.device), torch.from_numpy(logits).to(self.device)

    # ---- for people -----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The graph, its stored values, the source model and the export check."""
        return onnx_description(
            self.ref.folder,
            self.manifest,
            default_threshold=self.default_threshold,
            config=self.config.to_dict(),
        )
