"""A checkpoint described for people: config, parameter counts, sources of each part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vgtool.config import to_dict


def describe_checkpoint(model: str | Path) -> dict[str, Any]:
    """Load a checkpoint and describe it (``vgtool info``)."""
    from vgtool.checkpoint import config_hash, load_checkpoint, referenced_parts
    from vgtool.evaluation.calibrate import model_threshold
    from vgtool.models.bundled import resolve_model_path

    path = resolve_model_path(model)
    net = load_checkpoint(path)
    config = net.config
    referenced = referenced_parts(config)

    def count(module) -> tuple[int, int]:
        params = list(module.parameters())
        return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)

    parts: dict[str, dict[str, Any]] = {}
    vision_total, vision_train = count(net.vision)
    text_total, text_train = count(net.text)
    parts["vision"] = {
        "total": vision_total,
        "trainable": vision_train,
        "source": config.vision.spec,
        "weights": "referenced by name, loaded from source"
        if "vision" in referenced
        else "stored in checkpoint",
    }
    parts["text"] = {
        "total": text_total,
        "trainable": text_train,
        "source": f"transformers:{config.text.name} ({net.text.location_kind}: {net.text.location})",
        "weights": "referenced by name, loaded from source"
        if "text" in referenced
        else "stored in checkpoint",
    }
    total, trainable = count(net)
    parts["decoder"] = {
        "total": total - vision_total - text_total,
        "trainable": trainable - vision_train - text_train,
        "source": "vgtool (projections, encoders, queries, decoder, heads)",
        "weights": "stored in checkpoint",
    }
    return {
        "path": str(path),
        "architecture": config.architecture,
        "config_hash": config_hash(config),
        "parameters": {"total": total, "trainable": trainable},
        "default_threshold": model_threshold(path),
        "parts": parts,
        "config": to_dict(config),
    }
