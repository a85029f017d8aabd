"""Which :class:`~vgtool.grounders.base.Grounder` implementation loads a ``--model`` spec.

- A vgtool checkpoint folder (or ``default``/None for the bundled model): the family is the
  ``architecture`` in its ``config.json`` (:data:`FAMILIES`).
- A Hugging Face model, ``hf:<hub id>[@revision]`` or a folder saved with ``save_pretrained``: the
  family is its config's ``model_type`` (:data:`HF_FAMILIES`; see :mod:`vgtool.grounders.hf`).
- An exported ONNX folder (``onnx.json`` and its graphs; ``--model DIR`` or ``DIR/<graph>.onnx``):
  the family is the manifest's ``family`` (:data:`ONNX_FAMILIES`; see :mod:`vgtool.onnx_runtime.folder`).

Families are named by import path, so that loading one imports only its own dependencies.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from vgtool.checkpoint import read_checkpoint_config
from vgtool.errors import CheckpointError
from vgtool.grounders.base import Grounder, ModelKey
from vgtool.grounders.hf import is_hf_spec, resolve_hf_spec
from vgtool.models.bundled import resolve_model_path
from vgtool.onnx_runtime.folder import is_onnx_spec, onnx_folder, read_manifest

# vgtool checkpoint architecture -> "module:class" of its Grounder; a new family is one line here.
FAMILIES: dict[str, str] = {
    "vlgtr": "vgtool.grounders.vlgtr:VLGTRGrounder",
    "textquery": "vgtool.grounders.vlgtr:VLGTRGrounder",
    "fusion": "vgtool.grounders.vlgtr:VLGTRGrounder",
}
# Hugging Face config model_type -> "module:class" of its Grounder.
HF_FAMILIES: dict[str, str] = {
    "grounding-dino": "vgtool.grounders.grounding_dino:GroundingDinoGrounder",
    "mm-grounding-dino": "vgtool.grounders.grounding_dino:GroundingDinoGrounder",
    "owlv2": "vgtool.grounders.owl:OwlGrounder",
    "owlvit": "vgtool.grounders.owl:OwlGrounder",
    "omdet-turbo": "vgtool.grounders.omdet_turbo:OmDetTurboGrounder",
}

# ONNX manifest family -> "module:class" of its ONNX Runtime Grounder.
ONNX_FAMILIES: dict[str, str] = {
    "vlgtr": "vgtool.grounders.vlgtr_onnx:OnnxVLGTRGrounder",
    "owlv2": "vgtool.grounders.owl_onnx:OnnxOwlGrounder",
    "owlvit": "vgtool.grounders.owl_onnx:OnnxOwlGrounder",
    "grounding-dino": "vgtool.grounders.grounding_dino_onnx:OnnxGroundingDinoGrounder",
    "mm-grounding-dino": "vgtool.grounders.grounding_dino_onnx:OnnxGroundingDinoGrounder",
}


def grounder_class(architecture: str, table: dict[str, str] = FAMILIES) -> type:
    """The Grounder class registered for ``architecture`` in ``table``."""
    if architecture not in table:
        raise CheckpointError(
            f"no grounder for architecture {architecture!r} (known: {', '.join(sorted(table))})"
        )
    module, name = table[architecture].split(":")
    return getattr(importlib.import_module(module), name)


def _family_and_source(spec: str | Path | None) -> tuple[type, tuple]:
    """The Grounder class ``spec`` loads into, and the leading arguments of its ``load``."""
    if is_onnx_spec(spec):
        folder = onnx_folder(spec)
        manifest = read_manifest(folder)
        return grounder_class(manifest.family, ONNX_FAMILIES), (folder, manifest)
    if is_hf_spec(spec):
        ref = resolve_hf_spec(spec)
        return grounder_class(ref.model_type, HF_FAMILIES), (ref,)
    path = resolve_model_path(spec)
    config, _ = read_checkpoint_config(path)
    return grounder_class(config.architecture), (path,)


def load_grounder(
    spec: str | Path | None,
    *,
    device: str = "auto",
    bf16: bool | None = None,
    compile_model: bool = False,
) -> Grounder:
    """Load the grounder that ``spec`` names, ready for inference.

    Args:
        spec: a vgtool checkpoint folder (None or ``default``: the bundled model), a Hugging Face
            model (``hf:<hub id>[@revision]``, or a folder saved with ``save_pretrained``), or an
            exported ONNX folder (run by ONNX Runtime).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        bf16: bf16 autocast; None means on for CUDA, off for CPU.
        compile_model: ``torch.compile`` the model's heavy parts (pays off on long GPU runs).

    Raises:
        CheckpointError, ModelSourceError: the spec names no usable model (the message names the
            file and why, or what to do when a hub model is not at hand).
    """
    from vgtool.device import resolve_device

    family, source = _family_and_source(spec)
    if is_onnx_spec(spec):  # ONNX Runtime: precision and compilation are the export's
        return family.load(*source, device=resolve_device(device))
    return family.load(*source, device=resolve_device(device), bf16=bf16, compile_model=compile_model)


def model_key(spec: str | Path | None) -> ModelKey | None:
    """The identity and default threshold of the model ``spec`` names, read from its files without
    loading it; None when its family cannot tell them without loading.

    Raises:
        CheckpointError, ModelSourceError: as :func:`load_grounder`.
    """
    family, source = _family_and_source(spec)
    key = getattr(family, "key", None)
    return None if key is None else key(*source)
