"""A vgtool checkpoint (VL-GTR and every family speaking
:class:`~vgtool.models.base.GroundingModel`'s interface) as three ONNX graphs:

- ``image.onnx``: ``pixels`` ``[B, 3, S, S]`` uint8 (resized, not normalised) -> ``image_tokens``,
  ``image_keys`` ``[B, N, D]`` float32 (normalisation is inside the graph);
- ``text.onnx``: ``input_ids``, ``attention_mask`` ``[P, T]`` int64 -> ``text_tokens``,
  ``text_keys`` ``[P, T, D]``, ``text_valid`` ``[P, T]`` bool, ``text_pooled`` ``[P, D]``;
- ``decode.onnx``: both memories and ``image_index``, ``text_index`` ``[K]`` int64 ->
  ``pred_logits`` ``[K, Q, 2]`` (object, no-object) and ``pred_boxes`` ``[K, Q, 4]`` cxcywh in [0, 1].

B, P, T and K are dynamic axes; S (and so N) is the model's fixed input size. The folder also holds
the checkpoint's ``config.json`` and the tokenizer's files, so ONNX Runtime grounds with no torch
weights and no tokenizer download. The export is checked against torch on several batch and phrase
counts before it is declared done.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vgtool.data.preprocess import PreprocessConfig, normalize
from vgtool.errors import CheckpointError
from vgtool.grounders.vlgtr_onnx import (
    DECODE_INPUTS,
    DECODE_OUTPUTS,
    GRAPHS,
    IMAGE_INPUTS,
    IMAGE_OUTPUTS,
    TEXT_INPUTS,
    TEXT_OUTPUTS,
    TOKENIZER_DIR,
    OnnxVLGTRGrounder,
)
from vgtool.models.base import GroundingModel
from vgtool.models.memory import ImageMemory, TextMemory
from vgtool.onnx_runtime.folder import OnnxManifest
from vgtool.onnx_runtime.runtime_info import graph_parameters

# Largest |onnxruntime - torch| accepted at export: boxes are in [0, 1] of the image.
BOX_TOLERANCE = 1e-4
LOGIT_TOLERANCE = 1e-3


class ImageGraph(nn.Module):
    """uint8 pixels -> image memory (see the module docstring)."""

    def __init__(self, net: GroundingModel, preprocess: PreprocessConfig):
        super().__init__()
        self.net, self.preprocess = net, preprocess

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        memory = self.net.encode_image(normalize(pixels, self.preprocess))
        return memory.tokens, memory.keys


class TextGraph(nn.Module):
    """Token ids -> text memory."""

    def __init__(self, net: GroundingModel):
        super().__init__()
        self.net = net

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        memory = self.net.encode_text(input_ids, attention_mask)
        return memory.tokens, memory.keys, memory.valid, memory.pooled


class DecodeGraph(nn.Module):
    """Both memories and K pairs -> the last decoder layer's logits and boxes."""

    def __init__(self, net: GroundingModel, grid: tuple[int, int]):
        super().__init__()
        self.net, self.grid = net, grid

    def forward(
        self,
        image_tokens: torch.Tensor,
        image_keys: torch.Tensor,
        text_tokens: torch.Tensor,
        text_keys: torch.Tensor,
        text_valid: torch.Tensor,
        text_pooled: torch.Tensor,
        image_index: torch.Tensor,
        text_index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image = ImageMemory(tokens=image_tokens, keys=image_keys, grid=self.grid)
        text = TextMemory(tokens=text_tokens, keys=text_keys, valid=text_valid, pooled=text_pooled)
        out = self.net.decode(image, text, image_index, text_index)
        return out["pred_logits"], out["pred_boxes"]


def _export(module: nn.Module, args: tuple, path: Path, inputs, outputs, axes: dict, opset: int) -> None:
    """Trace ``module`` in eval mode (the exporter restores the mode it finds, so the wrapper must
    already be in eval mode, or the model it wraps is left training afterwards)."""
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )


def _copy_tokenizer(grounder: Any, out: Path) -> None:
    """Save the phrase tokenizer's files under ``out/tokenizer``."""
    tokenizer = grounder.tokenizer.tokenizer
    if not hasattr(tokenizer, "save_pretrained"):
        raise CheckpointError(
            f"{grounder.source}: its tokenizer ({type(tokenizer).__name__}) cannot be saved with the "
            "graphs; ONNX export supports transformers text encoders"
        )
    target = out / TOKENIZER_DIR
    if target.exists():
        shutil.rmtree(target)
    tokenizer.save_pretrained(str(target))


def export_vlgtr(grounder: Any, out: Path, *, opset: int) -> OnnxManifest:
    """Export a loaded :class:`~vgtool.grounders.vlgtr.VLGTRGrounder` into ``out`` (see the module
    docstring); returns the manifest, unchecked (:func:`check_against_torch` checks it)."""
    net: GroundingModel = grounder.net.float().eval()
    preprocess: PreprocessConfig = grounder.preprocess
    side = preprocess.image_size
    torch.manual_seed(0)
    example_pixels = torch.randint(0, 256, (2, 3, side, side), dtype=torch.uint8)
    example_text = grounder.tokenizer(["a phrase", "another longer phrase of words"])
    ids, mask = example_text["input_ids"], example_text["attention_mask"]
    with torch.no_grad():
        image_memory = net.encode_image(normalize(example_pixels, preprocess))
        text_memory = net.encode_text(ids, mask)
    grid = tuple(int(v) for v in image_memory.grid)
    # Pairs that are neither every phrase in every image nor one phrase per image: the decoder's
    # fast paths for those layouts are Python branches, which tracing would bake into the graph;
    # the general path it traces here is right for any pairs.
    image_index = torch.tensor([0, 1, 1])
    text_index = torch.tensor([1, 0, 1])

    _export(
        ImageGraph(net, preprocess),
        (example_pixels,),
        out / GRAPHS["image"],
        IMAGE_INPUTS,
        IMAGE_OUTPUTS,
        {"pixels": {0: "images"}, "image_tokens": {0: "images"}, "image_keys": {0: "images"}},
        opset,
    )
    text_axes = {name: {0: "phrases", 1: "tokens"} for name in (*TEXT_INPUTS, *TEXT_OUTPUTS)}
    text_axes["text_pooled"] = {0: "phrases"}
    _export(TextGraph(net), (ids, mask), out / GRAPHS["text"], TEXT_INPUTS, TEXT_OUTPUTS, text_axes, opset)
    decode_axes = {
        "image_tokens": {0: "images"},
        "image_keys": {0: "images"},
        **{name: {0: "phrases", 1: "tokens"} for name in ("text_tokens", "text_keys", "text_valid")},
        "text_pooled": {0: "phrases"},
        "image_index": {0: "pairs"},
        "text_index": {0: "pairs"},
        "pred_logits": {0: "pairs"},
        "pred_boxes": {0: "pairs"},
    }
    memories = (
        image_memory.tokens,
        image_memory.keys,
        text_memory.tokens,
        text_memory.keys,
        text_memory.valid,
        text_memory.pooled,
    )
    _export(
        DecodeGraph(net, grid),
        (*memories, image_index, text_index),
        out / GRAPHS["decode"],
        DECODE_INPUTS,
        DECODE_OUTPUTS,
        decode_axes,
        opset,
    )
    _copy_tokenizer(grounder, out)
    described = grounder.describe()
    shutil.copyfile(Path(grounder.source) / "config.json", out / "config.json")
    manifest = OnnxManifest(
        family="vlgtr",
        graphs=dict(GRAPHS),
        source=grounder.identity(),
        extra={
            "architecture": net.config.architecture,
            "image_size": side,
            "mean": list(preprocess.mean),
            "std": list(preprocess.std),
            "grid": list(grid),
            "max_length": grounder.tokenizer.max_length,
            "default_threshold": grounder.default_threshold,
            "num_image_tokens": int(image_memory.tokens.shape[1]),
            "d_model": int(image_memory.tokens.shape[2]),
            "decode_bytes_per_pair": int(net.decode_bytes_per_pair(int(image_memory.tokens.shape[1]))),
            "domain": described["domain"],
            "meta": described["meta"],
            "config": described["config"],
            "graph_parameters": graph_parameters(out, GRAPHS),
        },
    )
    return manifest


def check_against_torch(
    grounder: Any, out: Path, manifest: OnnxManifest, *, enforce: bool = True
) -> dict[str, Any]:
    """Ground random images with both runtimes at two batch and phrase counts; returns the largest
    differences. With ``enforce`` (float graphs), differences beyond :data:`BOX_TOLERANCE` (boxes,
    in [0, 1]) or :data:`LOGIT_TOLERANCE` (logits) raise :class:`CheckpointError`; quantised graphs
    differ by design, and their differences are only recorded."""
    from vgtool.grounders.vlgtr import decode_pairs, pair_index

    onnx_grounder = OnnxVLGTRGrounder.load(out, manifest, device=torch.device("cpu"))
    net, side = grounder.net, grounder.preprocess.image_size
    phrases = ["the red circle", "all blue squares left of the large green star", "a", "the shape"]
    generator = torch.Generator().manual_seed(1)
    worst = {"boxes": 0.0, "logits": 0.0}
    for num_images, num_phrases in ((1, 1), (3, 4)):
        pixels = torch.randint(0, 256, (num_images, 3, side, side), dtype=torch.uint8, generator=generator)
        texts = phrases[:num_phrases]
        image_index, text_index = pair_index(num_images, num_phrases, None)
        with torch.inference_mode():
            tokens = grounder.tokenizer(texts)
            expected = decode_pairs(
                net,
                net.encode_image(normalize(pixels, grounder.preprocess)),
                net.encode_text(tokens["input_ids"], tokens["attention_mask"]),
                image_index,
                text_index,
            )
        got = onnx_grounder.raw_outputs(
            pixels.numpy(), onnx_grounder.encode_phrases(texts), image_index, text_index
        )
        worst["boxes"] = max(worst["boxes"], float((got["pred_boxes"] - expected["pred_boxes"]).abs().max()))
        worst["logits"] = max(
            worst["logits"], float((got["pred_logits"] - expected["pred_logits"]).abs().max())
        )
    if enforce and (worst["boxes"] > BOX_TOLERANCE or worst["logits"] > LOGIT_TOLERANCE):
        raise CheckpointError(
            f"{out}: onnxruntime differs from torch (boxes by {worst['boxes']:.2g}, logits by "
            f"{worst['logits']:.2g}; allowed {BOX_TOLERANCE:g} and {LOGIT_TOLERANCE:g})"
        )
    return {"max_abs_diff": {k: float(f"{v:.3g}") for k, v in worst.items()}, "image_size": side}
