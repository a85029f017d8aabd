"""Hugging Face models as grounders: where a ``hf:`` spec points, and what identifies it.

A spec is ``hf:<hub id>[@<revision>]`` (``hf:IDEA-Research/grounding-dino-tiny``,
``hf:google/owlv2-base-patch16-ensemble@main``) or ``hf:<folder>`` / a plain folder written by
``save_pretrained`` (its ``config.json`` has a ``model_type`` and no vgtool ``format``). The family
comes from that ``model_type``, never from the name (see :data:`HF_FAMILIES` in the registry).

Hub ids resolve through the Hugging Face cache first, so a cached model loads with no network call
at all; with ``HF_HUB_OFFLINE=1`` nothing else is tried. Otherwise the files are downloaded once; if
the hub cannot be reached, one line says what to do, within seconds (no retry loop).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from PIL import Image

from vgtool.errors import ModelSourceError

HF_PREFIX = "hf:"
# Files a model folder needs (weights in safetensors where the repo has them).
ALLOW_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "merges.txt", "vocab.*"]
CONNECT_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class HFModelRef:
    """A resolved Hugging Face model.

    Attributes:
        spec: as the user gave it.
        folder: the local folder with ``config.json``, weights and processor files.
        repo_id: the hub id, or None for a local folder.
        revision: the commit the hub files come from (the cache's snapshot), or None.
        model_type: ``config.json``'s ``model_type``.
    """

    spec: str
    folder: Path
    repo_id: str | None
    revision: str | None
    model_type: str

    def identity(self) -> dict[str, str]:
        """The run key's model part: the hub id at its commit, or a hash of the folder's config and
        the names and sizes of its weight files; plus a hash of the config."""
        config_bytes = (self.folder / "config.json").read_bytes()
        config_hash = hashlib.sha256(config_bytes).hexdigest()[:16]
        if self.repo_id is not None:
            return {"model": f"hf:{self.repo_id}@{self.revision}", "model_config": config_hash}
        digest = hashlib.sha256(config_bytes)
        for path in sorted(self.folder.glob("*.safetensors")) + sorted(self.folder.glob("*.bin")):
            digest.update(f"{path.name}:{path.stat().st_size}".encode())
        return {"model": f"hf-folder:{digest.hexdigest()[:16]}", "model_config": config_hash}


def is_hf_spec(spec: str | Path | None) -> bool:
    """Whether ``spec`` names a Hugging Face model rather than a vgtool checkpoint."""
    if spec is None:
        return False
    if str(spec).startswith(HF_PREFIX):
        return True
    config = Path(spec).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        document = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(document, dict) and "model_type" in document and "format" not in document


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("TRANSFORMERS_OFFLINE", "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _hub_reachable() -> bool:
    """A TCP connection to the hub endpoint within :data:`CONNECT_TIMEOUT_S` (no request sent)."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", port), CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def _model_type(folder: Path, spec: str) -> str:
    try:
        document = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelSourceError(f"{spec}: {folder / 'config.json'} is missing or not JSON ({err})") from None
    if not isinstance(document, dict) or "model_type" not in document:
        raise ModelSourceError(f"{spec}: {folder / 'config.json'} names no model_type")
    return str(document["model_type"])


def _snapshot(repo_id: str, revision: str | None, spec: str) -> Path:
    """The cached snapshot of ``repo_id``, downloading it when allowed and possible."""
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS, local_files_only=True
            )
        )
    except Exception:  # not cached (the hub library raises several types for that)
        pass
    fix = (
        f"download it once where there is a network (`hf download {repo_id}`), copy the Hugging Face "
        "cache, or pass a folder saved with save_pretrained"
    )
    if _offline():
        raise ModelSourceError(f"{spec}: not in the Hugging Face cache and HF_HUB_OFFLINE is set; {fix}")
    if not _hub_reachable():
        raise ModelSourceError(f"{spec}: not in the Hugging Face cache and the hub cannot be reached; {fix}")
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS))
    except Exception as err:  # auth, missing repo or revision, network
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelSourceError(f"{spec}: cannot download ({detail[:200]}); {fix}") from err


def resolve_hf_spec(spec: str | Path) -> HFModelRef:
    """Where ``spec`` points: a local folder, or the cached (or just downloaded) hub snapshot.

    Raises:
        ModelSourceError: one line naming the spec and what to do.
    """
    text = str(spec)
    name = text[len(HF_PREFIX) :] if text.startswith(HF_PREFIX) else text
    folder = Path(name).expanduser()
    if folder.is_dir():
        return HFModelRef(text, folder.resolve(), None, None, _model_type(folder, text))
    if not name or name.count("/") > 1 or name.startswith(("/", ".", "~")):
        raise ModelSourceError(f"{text}: no such folder, and not a hub id of the form org/name[@revision]")
    repo_id, _, revision = name.partition("@")
    folder = _snapshot(repo_id, revision or None, text)
    commit = folder.name if folder.parent.name == "snapshots" else (revision or None)
    return HFModelRef(text, folder, repo_id, commit, _model_type(folder, text))


def load_pretrained(cls: Any, ref: HFModelRef, **kwargs: Any) -> Any:
    """``cls.from_pretrained(ref.folder)`` with transformers' progress bars off and a clear error."""
    from vgtool.models.hub import quiet_transformers
    from vgtool.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    quiet_transformers()
    try:
        return cls.from_pretrained(str(ref.folder), **kwargs)
    except (OSError, ValueError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelSourceError(f"{ref.spec}: cannot load {cls.__name__} ({detail[:200]})") from err


class ImageProcessorTransform:
    """``PIL RGB image -> [3, H, W]`` float32: the model's image processor, one image at a time.

    Picklable for DataLoader workers as the processor's class name and settings (plain data, no
    pickled objects); a worker rebuilds the processor, making torchvision importable first (a
    spawned worker has not done that yet).
    """

    def __init__(self, image_processor: Any):
        self.image_processor = image_processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def __getstate__(self) -> dict[str, Any]:
        return {"class": type(self.image_processor).__name__, "settings": self.image_processor.to_dict()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        from vgtool.torchvision_compat import ensure_torchvision_importable

        ensure_torchvision_importable()
        import transformers

        self.image_processor = getattr(transformers, state["class"]).from_dict(state["settings"])


def same_size_groups(pixels: torch.Tensor | list[torch.Tensor]) -> list[tuple[list[int], torch.Tensor]]:
    """A batch's inputs -> ``(image indices, [G, 3, H, W])`` per distinct input size, in order of
    first appearance (never padded together: padding changes Grounding DINO's boxes)."""
    if isinstance(pixels, torch.Tensor):
        return [(list(range(len(pixels))), pixels)]
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(pixels):
        by_shape.setdefault(tuple(image.shape), []).append(i)
    return [(ids, torch.stack([pixels[i] for i in ids])) for ids in by_shape.values()]


def count_parameters(modules: list[torch.nn.Module], origin: str) -> dict[str, Any]:
    """A ``vgtool info`` row: parameters of ``modules`` (each counted once) and where they are from."""
    params = {id(p): p for m in modules for p in m.parameters()}.values()
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "source": f"transformers {type(modules[0]).__name__}",
        "weights": origin,
    }
