"""Grounding DINO and MM-Grounding-DINO (LLMDet) as one ONNX graph, the forward that
:class:`~vgtool.grounders.grounding_dino.GroundingDinoGrounder` runs per (same-size images, caption):

- ``model.onnx``: ``pixel_values`` ``[B, 3, H, W]`` (the image processor's output) and
  ``input_ids``, ``attention_mask``, ``token_type_ids`` ``[B, L]`` int64 (one caption per image,
  ``L <= max_text_len``) -> ``logits`` ``[B, Q, T]`` per query and token (``T = max_text_len``,
  ``-inf`` past the caption) and ``pred_boxes`` ``[B, Q, 4]`` cxcywh in [0, 1] of each image.

``B``, ``H``, ``W`` and ``L`` are dynamic. The model fuses text and image throughout, so there is
no cut between a text and an image graph. It is traced with the TorchScript exporter
(``dynamo=False``) while :func:`~vgtool.onnx_export.grounding_dino_trace.traceable` stands in for
the code a trace would freeze to the traced size (the dynamo exporter needs the same changes and
took over 25 minutes to trace even a tiny model here). The check then compares onnxruntime with the
unchanged torch model on other image sizes, batch sizes and caption lengths than the traced ones.
The folder also gets the processor files and the config (no torch weights).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from vgtool.grounders.grounding_dino import Caption, GroundingDinoGrounder, pack_captions
from vgtool.grounders.grounding_dino_onnx import (
    GRAPHS,
    INPUTS,
    OUTPUTS,
    OnnxGroundingDinoGrounder,
)
from vgtool.onnx_export.grounding_dino_trace import traceable
from vgtool.onnx_export.parity import compare_outputs, worst
from vgtool.onnx_runtime.folder import OnnxManifest
from vgtool.onnx_runtime.runtime_info import graph_parameters

# Largest absolute difference from torch the export accepts, per output (logits: a score, their
# sigmoid, moves at most a quarter as much).
TOLERANCES = {"logits": 1e-3, "pred_boxes": 1e-4}
# (images, height, width, phrases): traced with the first, checked with the others (other batch
# sizes, aspect ratios and caption lengths, none with a 1 x 1 feature level).
TRACE = (2, 192, 288, ("a cat", "a remote control"))
CHECKS = (
    (1, 160, 224, ("car", "person", "a dog on a bench", "red car")),
    (3, 256, 160, ("the man in the red shirt",)),
)


class GroundingDinoGraph(torch.nn.Module):
    """``model.onnx``: the detector's forward, returning its raw outputs (see the module docstring)."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model(
            pixel_values=pixel_values,
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
        )
        return outputs.logits, outputs.pred_boxes


def export_grounding_dino(grounder: GroundingDinoGrounder, out: Path, *, opset: int) -> OnnxManifest:
    """Write ``model.onnx``, the processor files and the config; returns the manifest, unchecked
    (:func:`check_against_torch` checks it)."""
    model = grounder.model.float().eval()
    graph = GroundingDinoGraph(model).eval()
    path = out / GRAPHS["model"]
    sequence = {0: "images", 1: "tokens"}
    trace = _inputs(grounder, *TRACE, torch.Generator().manual_seed(0))
    with traceable(model), warnings.catch_warnings():  # the tracer's notes; the check decides
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (trace[0], *_repeated(trace[1], len(trace[0]))),
            str(path),
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes={
                "pixel_values": {0: "images", 2: "height", 3: "width"},
                "input_ids": sequence,
                "attention_mask": sequence,
                "token_type_ids": sequence,
                "logits": {0: "images"},
                "pred_boxes": {0: "images"},
            },
            opset_version=opset,
            dynamo=False,
        )
    grounder.processor.save_pretrained(str(out))
    grounder.config.save_pretrained(str(out))
    manifest = OnnxManifest(
        family=grounder.family,
        graphs=dict(GRAPHS),
        source=grounder.identity(),
        extra={
            "max_text_len": grounder.max_text_len,
            "opset": opset,
            "exporter": "torch.onnx.export(dynamo=False)",
            "graph_parameters": graph_parameters(out, GRAPHS),
        },
    )
    return manifest


def check_against_torch(
    grounder: GroundingDinoGrounder, out: Path, manifest: OnnxManifest, *, enforce: bool = True
) -> dict[str, Any]:
    """Run the graph through the ONNX Runtime grounder on each of :data:`CHECKS`, and the torch
    grounder (the unchanged model) on the same inputs; the largest differences over all of them.

    Raises:
        CheckpointError: with ``enforce`` (float graphs), a difference beyond :data:`TOLERANCES`.
    """

    onnx_grounder = OnnxGroundingDinoGrounder.load(out, manifest, device=torch.device("cpu"))
    generator = torch.Generator().manual_seed(1)
    diffs = []
    for check in CHECKS:
        pixels, caption = _inputs(grounder, *check, generator)
        expected = dict(zip(("pred_boxes", "logits"), grounder.raw_outputs(pixels, caption), strict=True))
        actual = dict(zip(("pred_boxes", "logits"), onnx_grounder.raw_outputs(pixels, caption), strict=True))
        diffs.append(compare_outputs(out / GRAPHS["model"], expected, actual, TOLERANCES, enforce=enforce))
    return {
        "max_abs_diff": worst(*diffs),
        "tolerance": dict(TOLERANCES),
        "inputs": [
            {"images": images, "height": height, "width": width, "phrases": len(phrases)}
            for images, height, width, phrases in CHECKS
        ],
    }


def _inputs(
    grounder: GroundingDinoGrounder,
    images: int,
    height: int,
    width: int,
    phrases: tuple[str, ...],
    generator: torch.Generator,
) -> tuple[torch.Tensor, Caption]:
    """Random pixels ``[images, 3, height, width]`` and the caption of ``phrases``."""
    (caption,), _ = pack_captions(grounder.tokenizer, phrases, grounder.max_text_len)
    return torch.randn(images, 3, height, width, generator=generator), caption


def _repeated(caption: Caption, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The caption's ``input_ids``, ``attention_mask``, ``token_type_ids``, ``[rows, L]`` each."""
    return tuple(getattr(caption, name).repeat(rows, 1) for name in INPUTS[1:])
