"""vgtool's trainable models: configs, presets, the families (built by ``vgtool.models.build``),
their parts and postprocessing (checkpoints: ``vgtool.checkpoint``)."""

from vgtool.models.config import DecoderConfig, ModelConfig, TextConfig, VisionConfig
from vgtool.models.presets import PRESETS, get_preset

__all__ = ["PRESETS", "DecoderConfig", "ModelConfig", "TextConfig", "VisionConfig", "get_preset"]
