"""Checkpoints: a folder with ``config.json`` and ``model.safetensors``. Nothing is ever unpickled.

``config.json`` holds the :class:`ModelConfig` and says which parts are *referenced* rather than
stored: a pretrained backbone that was never unfrozen is rebuilt from its source (hub cache, local
folder or model package) by name, so checkpoints stay small. Every other weight is in
``model.safetensors``, and loading is strict: missing, unexpected or misshapen keys are named.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from vgtool import __version__
from vgtool.atomic import write_bytes_atomic
from vgtool.config import from_dict, non_default_fields
from vgtool.errors import CheckpointError, ConfigError
from vgtool.models.build import build_model
from vgtool.models.config import ModelConfig, drop_retired_fields, model_config_dict
from vgtool.models.presets import config_from_preset

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "vgtool-checkpoint"
FORMAT_VERSION = 1
PART_PREFIXES = {"vision": "vision.", "text": "text."}
FALLBACK_THRESHOLD = 0.5  # the default threshold of a checkpoint that was never calibrated


def referenced_parts(config: ModelConfig) -> list[str]:
    """Parts rebuilt from their source instead of stored: pretrained and never unfrozen."""
    parts = []
    if config.vision.pretrained and config.vision.frozen:
        parts.append("vision")
    if config.text.pretrained and config.text.frozen:
        parts.append("text")
    return parts


def config_hash(config: ModelConfig) -> str:
    """A short stable hash of the model config (for run manifests and output-folder checks).

    Fields at their default value are left out, so options added later (with a default that keeps
    the old behaviour) do not change the hash of existing checkpoints; so are the head sections of
    the other model families, which a config leaves at their defaults.
    """
    text = json.dumps(non_default_fields(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_fingerprint(directory: str | Path) -> str:
    """sha256 over a checkpoint's config and weights files (what makes two runs' models the same)."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        with open(directory / name, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def model_threshold(directory: str | Path, fallback: float = FALLBACK_THRESHOLD) -> float:
    """The default score threshold stored in a checkpoint (``meta.postprocess.threshold``, chosen by
    ``vgtool export --calibrate``), or ``fallback`` (:data:`FALLBACK_THRESHOLD` unless given)."""
    value = (model_postprocess(directory) or {}).get("threshold")
    return float(value) if isinstance(value, int | float) else fallback


def model_postprocess(directory: str | Path) -> dict[str, Any] | None:
    """A checkpoint's calibrated postprocessing (``meta.postprocess``: the default ``threshold`` and
    how it was chosen), or None when it has none."""
    _, document = read_checkpoint_config(directory)
    postprocess = (document.get("meta") or {}).get("postprocess")
    return dict(postprocess) if isinstance(postprocess, dict) else None


def set_model_postprocess(directory: str | Path, postprocess: dict[str, Any]) -> None:
    """Store ``postprocess`` as ``meta.postprocess`` of an existing checkpoint (only ``config.json``
    is rewritten, atomically; everything else in it is kept as read)."""
    _, document = read_checkpoint_config(directory)
    document["meta"] = {**(document.get("meta") or {}), "postprocess": postprocess}
    write_bytes_atomic(Path(directory) / CONFIG_NAME, (json.dumps(document, indent=2) + "\n").encode())


def save_checkpoint(
    model: torch.nn.Module,
    directory: str | Path,
    extra: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` (a :class:`~vgtool.models.base.GroundingModel`) to ``directory``, each file
    atomically, the config last.

    Args:
        model: the model; its ``config`` decides which parts are referenced.
        directory: created if needed.
        extra: JSON-serialisable metadata stored under ``"meta"`` (training step, metrics, ...).
        dtype: store floating-point weights in this dtype (e.g. ``torch.float16`` to halve a shipped
            model); loading casts them back to the model's dtype.
    """
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config: ModelConfig = model.config
    skip = tuple(PART_PREFIXES[p] for p in referenced_parts(config))
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in model.state_dict().items():
        if key.startswith(skip):
            continue
        value = value.detach().cpu().contiguous()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        if value.data_ptr() in seen and value.numel():  # tied weights: safetensors refuses shared storage
            value = value.clone()
        seen.add(value.data_ptr())
        tensors[key] = value
    write_bytes_atomic(directory / WEIGHTS_NAME, save(tensors))
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vgtool_version": __version__,
        "model": model_config_dict(config),
        "referenced": {part: getattr(config, part).name for part in referenced_parts(config)},
        "meta": extra or {},
    }
    write_bytes_atomic(directory / CONFIG_NAME, (json.dumps(document, indent=2) + "\n").encode())
    return directory


def read_checkpoint_config(directory: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """Parse ``config.json`` of a checkpoint folder.

    Fields of options removed since the checkpoint was written are dropped when they hold their
    old default (see :data:`vgtool.models.config.RETIRED_FIELDS`).

    Returns:
        The model config and the whole JSON document (as read, retired fields included).

    Raises:
        CheckpointError: naming the file and the problem, e.g. a removed option that was on.
    """
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise CheckpointError(
            f"{directory}: not a checkpoint folder (expected {CONFIG_NAME} and {WEIGHTS_NAME})"
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: missing; a checkpoint folder holds {CONFIG_NAME} and {WEIGHTS_NAME}"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable or not JSON ({err})") from err
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f'{path}: not a vgtool checkpoint config (no "format": "{FORMAT}")')
    if document.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer vgtool (format {document['format_version']})")
    try:
        model = document.get("model", {})
        if isinstance(model, dict):  # fields of removed options, at their old defaults, are dropped
            model = drop_retired_fields(model)
        config = from_dict(ModelConfig, model)
    except ConfigError as err:
        raise CheckpointError(f"{path}: {err}") from err
    return config, document


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({err})") from err


def check_state_dict_keys(
    model: torch.nn.Module, tensors: dict[str, torch.Tensor], skip: tuple[str, ...], where: Path
):
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    )
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
        if names:
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            problems.append(f"{len(names)} {label} key(s): {shown}")
    if problems:
        raise CheckpointError(f"{where}: does not fit the architecture in its config; " + "; ".join(problems))


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu"):
    """Rebuild a model (of the family its config names) from a checkpoint folder, strictly.

    Raises:
        CheckpointError: naming the file and the problem (missing, corrupt, wrong keys or shapes).
    """
    directory = Path(directory)
    config, _ = read_checkpoint_config(directory)
    referenced = referenced_parts(config)
    tensors = _load_tensors(directory / WEIGHTS_NAME)
    # Stored parts need no pretrained download: their weights come from the file.
    build_config = replace(
        config,
        vision=config.vision if "vision" in referenced else replace(config.vision, pretrained=False),
        text=config.text if "text" in referenced else replace(config.text, pretrained=False),
    )
    model = build_model(build_config)
    model.config = config
    skip = tuple(PART_PREFIXES[p] for p in referenced)
    check_state_dict_keys(model, tensors, skip, directory / WEIGHTS_NAME)
    model.load_state_dict(tensors, strict=False)
    return model.to(device).eval()


def init_checkpoint(preset: str, out: str | Path, overrides: Sequence[str] = (), seed: int = 0) -> Path:
    """Build a preset's untrained model with seed ``seed`` (``key.path=value`` overrides applied)
    and save it to ``out`` (``vgtool init``)."""
    config = config_from_preset(preset, overrides)
    torch.manual_seed(seed)
    model = build_model(config)
    return save_checkpoint(model, out, extra={"created_by": f"vgtool init --preset {preset}", "seed": seed})


def export_checkpoint(
    source: str | Path, out: str | Path, *, fp16: bool = True, postprocess: dict[str, Any] | None = None
) -> tuple[Path, int]:
    """Load ``source`` strictly and write it to ``out`` (fp16 weights by default), keeping its metadata.

    Args:
        postprocess: stored as ``meta.postprocess`` (e.g. the calibrated default ``threshold``).

    Returns:
        The written folder and the total size of its files in bytes.
    """
    source, out = Path(source), Path(out)
    _, document = read_checkpoint_config(source)
    model = load_checkpoint(source)
    meta = dict(document.get("meta") or {})
    meta["exported_from"] = str(source)
    if postprocess is not None:
        meta["postprocess"] = postprocess
    save_checkpoint(model, out, extra=meta, dtype=torch.float16 if fp16 else None)
    return out, sum(p.stat().st_size for p in out.iterdir() if p.is_file())
