"""OWLv2 and OWL-ViT as two ONNX graphs, cut where :class:`~vgtool.grounders.owl.OwlGrounder` cuts
the work:

- ``text.onnx``: ``input_ids``, ``attention_mask`` ``[P, L]`` (int64, padded to the model's ``L``
  tokens as the processor pads) -> ``query_embeds`` ``[P, D]`` unit-norm float32; run once per run.
- ``image.onnx``: ``pixel_values`` ``[B, 3, S, S]`` (the image processor's output) and
  ``query_embeds`` ``[P, D]`` -> ``logits`` ``[B, N, P]`` (every patch against every phrase) and
  ``boxes_cxcywh`` ``[B, N, 4]`` in [0, 1] of the processed image (for OWLv2 the padded square).

``B`` and ``P`` are dynamic; ``S`` and ``L`` are the model's own (its image processor always resizes
to ``S``). Both graphs are traced from the same functions the torch grounder runs
(:func:`~vgtool.grounders.owl.text_query_embeds`, :func:`~vgtool.grounders.owl.patch_predictions`)
with the TorchScript exporter (``dynamo=False``: as exact as the dynamo exporter on these models,
and far faster: 0.2 s against 8 s for the tiny test models). The folder also gets the processor files and the config, so
the ONNX Runtime grounder (:mod:`vgtool.grounders.owl_onnx`) loads no torch weights.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from vgtool.grounders.owl import OwlGrounder, patch_predictions, text_query_embeds
from vgtool.grounders.owl_onnx import (
    GRAPHS,
    IMAGE_INPUTS,
    IMAGE_OUTPUTS,
    TEXT_INPUTS,
    TEXT_OUTPUTS,
    OnnxOwlGrounder,
)
from vgtool.onnx_export.parity import compare_outputs, worst
from vgtool.onnx_runtime.folder import OnnxManifest
from vgtool.onnx_runtime.runtime_info import graph_parameters

# Largest absolute difference from torch the export accepts, per output (logits: a score, their
# sigmoid, moves at most a quarter as much).
TOLERANCES = {"query_embeds": 1e-4, "logits": 1e-3, "boxes_cxcywh": 1e-4}
# Traced with one count of images and phrases, checked with others.
TRACE_PHRASES = ("a photo of a cat", "dog")
CHECK_PHRASES = ("a red car", "the man in the blue shirt", "cat", "a dog on a bench")
TRACE_IMAGES, CHECK_IMAGES = 2, 3


class TextGraph(torch.nn.Module):
    """``text.onnx``: the text tower and projection, unit-normed (see the module docstring)."""

    def __init__(self, base_model: Any):
        super().__init__()
        self.base_model = base_model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return text_query_embeds(self.base_model, input_ids, attention_mask)


class ImageGraph(torch.nn.Module):
    """``image.onnx``: the vision tower and both heads (see the module docstring)."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(
        self, pixel_values: torch.Tensor, query_embeds: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feature_map, _ = self.model.image_embedder(pixel_values=pixel_values)  # [B, h, w, D]
        return patch_predictions(self.model, feature_map, query_embeds)


def export_owl(grounder: OwlGrounder, out: Path, *, opset: int) -> OnnxManifest:
    """Write ``text.onnx``, ``image.onnx``, the processor files and the config; returns the
    manifest, unchecked (:func:`check_against_torch` checks it)."""
    model = grounder.model.float().eval()
    text_graph, image_graph = TextGraph(grounder.base_model).eval(), ImageGraph(model).eval()
    side = grounder.config.vision_config.image_size
    trace_tokens = _tokens(grounder, TRACE_PHRASES)
    trace_pixels = torch.randn(TRACE_IMAGES, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        trace_queries = text_graph(*trace_tokens)
    with warnings.catch_warnings():  # the tracer's notes on Python values; the check decides
        warnings.simplefilter("ignore")
        torch.onnx.export(
            text_graph,
            trace_tokens,
            str(out / GRAPHS["text"]),
            input_names=list(TEXT_INPUTS),
            output_names=list(TEXT_OUTPUTS),
            dynamic_axes={name: {0: "phrases"} for name in (*TEXT_INPUTS, *TEXT_OUTPUTS)},
            opset_version=opset,
            dynamo=False,
        )
        torch.onnx.export(
            image_graph,
            (trace_pixels, trace_queries),
            str(out / GRAPHS["image"]),
            input_names=list(IMAGE_INPUTS),
            output_names=list(IMAGE_OUTPUTS),
            dynamic_axes={
                "pixel_values": {0: "images"},
                "query_embeds": {0: "phrases"},
                "logits": {0: "images", 2: "phrases"},
                "boxes_cxcywh": {0: "images"},
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
            "input_size": side,
            "text_length": grounder.max_text_length,
            "opset": opset,
            "exporter": "torch.onnx.export(dynamo=False)",
            "graph_parameters": graph_parameters(out, GRAPHS),
        },
    )
    return manifest


def check_against_torch(
    grounder: OwlGrounder, out: Path, manifest: OnnxManifest, *, enforce: bool = True
) -> dict[str, Any]:
    """Run both graphs through the ONNX Runtime grounder on other counts of phrases and images
    than they were traced with, and the torch grounder on the same inputs; the largest differences.
    The image graph gets torch's query embeddings, so that its check measures it alone.

    Raises:
        CheckpointError: with ``enforce`` (float graphs), a difference beyond :data:`TOLERANCES`.
    """

    onnx_grounder = OnnxOwlGrounder.load(out, manifest, device=torch.device("cpu"))
    side = grounder.config.vision_config.image_size
    pixels = torch.randn(CHECK_IMAGES, 3, side, side, generator=torch.Generator().manual_seed(1))
    input_ids, attention_mask = _tokens(grounder, CHECK_PHRASES)
    with torch.inference_mode():
        queries = grounder.embed_text(input_ids, attention_mask)
        logits, boxes_cxcywh = grounder.raw_outputs(pixels, queries)
    onnx_queries = onnx_grounder.embed_text(input_ids, attention_mask)
    onnx_logits, onnx_boxes = onnx_grounder.raw_outputs(pixels, queries)
    text = compare_outputs(
        out / GRAPHS["text"],
        {"query_embeds": queries},
        {"query_embeds": onnx_queries},
        TOLERANCES,
        enforce=enforce,
    )
    image = compare_outputs(
        out / GRAPHS["image"],
        {"logits": logits, "boxes_cxcywh": boxes_cxcywh},
        {"logits": onnx_logits, "boxes_cxcywh": onnx_boxes},
        TOLERANCES,
        enforce=enforce,
    )
    return {
        "max_abs_diff": worst(text, image),
        "tolerance": dict(TOLERANCES),
        "inputs": {"images": CHECK_IMAGES, "phrases": len(CHECK_PHRASES)},
    }


def _tokens(grounder: OwlGrounder, phrases: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[P, L]`` input ids and attention mask, padded as the grounder pads them."""
    limit = grounder.max_text_length
    tokens = grounder.processor.tokenizer(
        list(phrases), padding="max_length", truncation=True, max_length=limit, return_tensors="pt"
    )
    return tokens["input_ids"], tokens["attention_mask"]
