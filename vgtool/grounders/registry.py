"""Which :class:`~vgtool.grounders.base.Grounder` implementation loads a ``--model`` spec.

Today a spec is a vgtool checkpoint folder (or ``default``/None for the bundled model), and the
family is the ``architecture`` in its ``config.json``. Families are named here by import path, so
that loading one imports only its own dependencies.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from vgtool.checkpoint import read_checkpoint_config
from vgtool.errors import CheckpointError
from vgtool.grounders.base import Grounder
from vgtool.models.bundled import resolve_model_path

# architecture -> "module:class" of its Grounder; a new family is one line here.
FAMILIES: dict[str, str] = {
    "vlgtr": "vgtool.grounders.vlgtr:VLGTRGrounder",
}


def grounder_class(architecture: str) -> type:
    """The Grounder class registered for ``architecture``."""
    if architecture not in FAMILIES:
        raise CheckpointError(
            f"no grounder for architecture {architecture!r} (known: {', '.join(sorted(FAMILIES))})"
        )
    module, name = FAMILIES[architecture].split(":")
    return getattr(importlib.import_module(module), name)


def load_grounder(
    spec: str | Path | None,
    *,
    device: str = "auto",
    bf16: bool | None = None,
    compile_model: bool = False,
) -> Grounder:
    """Load the grounder that ``spec`` names, ready for inference.

    Args:
        spec: a checkpoint folder; None or ``default`` is the bundled model.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        bf16: bf16 autocast; None means on for CUDA, off for CPU.
        compile_model: ``torch.compile`` the model's heavy parts (pays off on long GPU runs).

    Raises:
        CheckpointError: the spec names no usable model (the message names the file and why).
    """
    from vgtool.device import resolve_device

    path = resolve_model_path(spec)
    config, _ = read_checkpoint_config(path)
    family = grounder_class(config.architecture)
    return family.load(path, device=resolve_device(device), bf16=bf16, compile_model=compile_model)
