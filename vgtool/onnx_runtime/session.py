"""ONNX Runtime sessions for exported graphs: providers for the device, threads that leave room for
the decoding workers, and one clear line for a file that is not the graph it should be."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vgtool.errors import CheckpointError


def require_onnxruntime() -> Any:
    """Import onnxruntime, or say how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise CheckpointError(
            "ONNX models need onnxruntime: pip install 'vgtool[onnx]' (or onnxruntime-gpu for CUDA)"
        ) from None
    return onnxruntime


def providers_for(device_type: str) -> list[str]:
    """Execution providers for ``device_type`` (``cpu`` or ``cuda``), best first; CUDA falls back
    to CPU where onnxruntime has no CUDA provider installed."""
    ort = require_onnxruntime()
    available = ort.get_available_providers()
    wanted = ["CUDAExecutionProvider"] if device_type == "cuda" else []
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


def default_threads() -> int:
    """Intra-op threads: the cores this process may use (the decoding workers sleep while the
    model runs, as with torch)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def open_session(
    path: Path,
    *,
    device_type: str = "cpu",
    threads: int | None = None,
    expect_inputs: Sequence[str] = (),
    expect_outputs: Sequence[str] = (),
) -> Any:
    """An ``InferenceSession`` for ``path``, checked to take ``expect_inputs`` and give
    ``expect_outputs`` (by name).

    Raises:
        CheckpointError: the file is not a loadable ONNX graph, or not the graph it should be.
    """
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # No busy-waiting between runs: spinning threads would take the cores from the decoding
    # workers, the writer threads and torch, which run between the graphs' calls.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers_for(device_type))
    except Exception as err:  # onnxruntime raises its own exception types for every load failure
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a loadable ONNX graph ({reason[:200]})") from None
    inputs = {i.name for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    missing = [n for n in expect_inputs if n not in inputs] + [n for n in expect_outputs if n not in outputs]
    if missing:
        raise CheckpointError(
            f"{path}: not the graph this folder's manifest describes (it lacks {', '.join(missing)}; "
            f"has inputs {sorted(inputs)}, outputs {sorted(outputs)}); export the model again"
        )
    return session


def open_sessions(
    folder: Path,
    graphs: Mapping[str, str],
    ios: Mapping[str, tuple[Sequence[str], Sequence[str]]],
    *,
    device_type: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """A session per graph role of an exported folder, each checked by :func:`open_session`.

    Args:
        graphs: the manifest's role -> file name.
        ios: role -> (inputs, outputs) the grounder feeds and reads; every role must be in ``graphs``.

    Raises:
        CheckpointError: the manifest names no graph for a role, or a graph is not what it should be.
    """
    missing = [role for role in ios if role not in graphs]
    if missing:
        raise CheckpointError(f"{folder}: onnx.json names no {' or '.join(missing)} graph")
    return {
        role: open_session(
            folder / graphs[role],
            device_type=device_type,
            threads=threads,
            expect_inputs=inputs,
            expect_outputs=outputs,
        )
        for role, (inputs, outputs) in ios.items()
    }


def run(session: Any, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
    """Run ``session`` on numpy ``feeds`` and return ``outputs`` in order."""
    return session.run(list(outputs), dict(feeds))
