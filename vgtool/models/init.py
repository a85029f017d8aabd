"""Create untrained checkpoints from presets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vgtool.config import apply_overrides, from_dict, to_dict
from vgtool.models.config import ModelConfig
from vgtool.models.presets import PRESETS, get_preset


def preset_names() -> list[str]:
    return sorted(PRESETS)


def config_from_preset(preset: str, overrides: Sequence[str] = ()) -> ModelConfig:
    """The preset's config with ``key.path=value`` overrides applied and type-checked."""
    return from_dict(ModelConfig, apply_overrides(to_dict(get_preset(preset)), overrides))


def init_checkpoint(preset: str, out: str | Path, overrides: Sequence[str] = (), seed: int = 0) -> Path:
    """Build the preset's model with seed ``seed`` and save it to ``out``."""
    import torch

    from vgtool.checkpoint import save_checkpoint
    from vgtool.models.vlgtr import build_model

    config = config_from_preset(preset, overrides)
    torch.manual_seed(seed)
    model = build_model(config)
    return save_checkpoint(model, out, extra={"created_by": f"vgtool init --preset {preset}", "seed": seed})
