"""The VL-GTR model: config, presets, parts, postprocessing and checkpoints."""

from vgtool.models.config import DecoderConfig, ModelConfig, TextConfig, VisionConfig
from vgtool.models.presets import PRESETS, get_preset

__all__ = ["PRESETS", "DecoderConfig", "ModelConfig", "TextConfig", "VisionConfig", "get_preset"]
