"""Import weights saved elsewhere (``.pth`` / ``.pt``, as training notebooks write them).

Such files are pickles, so they are read only with ``torch.load(weights_only=True)``, which refuses
anything but tensors and plain containers; nothing in them can run code. The weights must fit a
vgtool architecture exactly (built from a preset and overrides); the result is a normal checkpoint.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from vgtool.errors import CheckpointError

NESTED_KEYS = ("model", "state_dict", "model_state_dict", "module")


def read_torch_state_dict(path: str | Path) -> dict:
    """Load a ``.pth``/``.pt`` state dict safely; unwrap common nestings and a DDP ``module.`` prefix.

    Raises:
        CheckpointError: unreadable, refused by the weights-only unpickler, or not a state dict.
    """
    import torch

    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: refused or unreadable by the weights-only loader ({first[:160]})"
        ) from err
    for _ in range(2):
        if isinstance(obj, dict):
            nested = next((obj[k] for k in NESTED_KEYS if isinstance(obj.get(k), dict)), None)
            if nested is not None:
                obj = nested
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()
    ):
        raise CheckpointError(f"{path}: not a state dict (expected a mapping of names to tensors)")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def import_torch_weights(
    weights: str | Path, *, preset: str, out: str | Path, overrides: Sequence[str] = ()
) -> Path:
    """Build ``preset`` (with overrides), load ``weights`` into it strictly, save a checkpoint to ``out``."""
    from vgtool.checkpoint import check_state_dict_keys, save_checkpoint
    from vgtool.models.build import build_model
    from vgtool.models.presets import config_from_preset

    state = read_torch_state_dict(weights)
    config = config_from_preset(preset, overrides)
    # Every weight comes from the file, so nothing is fetched from a hub, and every part is stored.
    build = replace(
        config,
        vision=replace(config.vision, pretrained=False, frozen=False),
        text=replace(config.text, pretrained=False, frozen=False),
    )
    model = build_model(build)
    check_state_dict_keys(model, state, (), Path(weights))
    model.load_state_dict(state, strict=True)
    model.config = build
    return save_checkpoint(model, out, extra={"imported_from": Path(weights).name, "preset": preset})
