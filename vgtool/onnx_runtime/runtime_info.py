"""What the ONNX Runtime grounders of Hugging Face families report about themselves: their identity
in the run key, how they run (for the run manifest) and their graphs (for ``vgtool info``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vgtool.onnx_runtime.folder import OnnxManifest


def graph_parameters(folder: Path, graphs: Mapping[str, str]) -> dict[str, int]:
    """Per graph role, how many values its initializers store (weights and constant buffers);
    counted at export, so that ``vgtool info`` need not read the graphs."""
    import onnx

    return {
        role: sum(
            math.prod(tensor.dims)
            for tensor in onnx.load(str(folder / name), load_external_data=False).graph.initializer
        )
        for role, name in graphs.items()
    }


def onnx_identity(manifest: OnnxManifest) -> dict[str, str]:
    """The source model's identity, marked as run by onnxruntime (and quantised, where it is):
    float results match torch only to rounding, so the two never share a resumed run."""
    runtime = "onnx" + (f"-{manifest.quantization}" if manifest.quantization else "")
    return {
        "model": f"{manifest.source.get('model', '?')}+{runtime}",
        "model_config": manifest.source.get("model_config", "?"),
    }


def runtime_settings(sessions: Mapping[str, Any], manifest: OnnxManifest) -> dict[str, Any]:
    """The runtime, each graph's execution providers, the quantisation and the threads."""
    first = next(iter(sessions.values()))
    return {
        "runtime": "onnxruntime",
        "providers": {role: list(session.get_providers()) for role, session in sessions.items()},
        "quantization": manifest.quantization,
        "threads": first.get_session_options().intra_op_num_threads,
    }


def onnx_description(
    folder: Path, manifest: OnnxManifest, *, default_threshold: float, config: dict[str, Any]
) -> dict[str, Any]:
    """``vgtool info``'s description: the graphs and their stored values, the source model and the
    export check."""
    counts = manifest.extra.get("graph_parameters", {})
    weights = f"stored in the graph ({manifest.quantization or 'float32'})"
    parts = {
        role: {"total": int(counts.get(role, 0)), "trainable": 0, "source": name, "weights": weights}
        for role, name in manifest.graphs.items()
    }
    return {
        "path": str(folder),
        "source": manifest.source.get("model", "?"),
        "architecture": f"{manifest.family} (ONNX Runtime)",
        "config_hash": onnx_identity(manifest)["model_config"],
        "parameters": {"total": sum(part["total"] for part in parts.values()), "trainable": 0},
        "default_threshold": default_threshold,
        "parts": parts,
        "meta": {"onnx": {"source": manifest.source, "check": manifest.check}},
        "config": config,
    }
