"""int8 graphs: onnxruntime's dynamic quantisation (int8 weights, activations quantised per batch at
run time; no calibration data) of an exported folder's graphs, in place."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path

from vgtool.onnx_runtime.folder import OnnxManifest

QUANTIZATION = "int8-dynamic"
# Operators whose weights become int8. Conv is left in float: onnxruntime's ConvInteger kernel is
# slower on CPU than the float convolution it replaces (see docs/experiments.md).
OP_TYPES = ("MatMul", "Gemm", "Attention")


def quantize_folder(folder: Path, manifest: OnnxManifest) -> OnnxManifest:
    """Quantise every graph of ``folder`` and record it in the manifest (which is returned)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # its "consider pre-processing" warning, once per graph
    try:
        for name in manifest.graphs.values():
            path = folder / name
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                target = Path(scratch) / name
                quantize_dynamic(
                    path,
                    target,
                    op_types_to_quantize=list(OP_TYPES),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                )
                target.replace(path)
    finally:
        root.setLevel(level)
    return replace(manifest, quantization=QUANTIZATION)
