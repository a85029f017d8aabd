"""Dataset readers: every supported layout becomes a list of :class:`GroundingSample`."""

from __future__ import annotations

from vgtool.datasets.registry import DataConfig, detect_format, load_samples
from vgtool.datasets.sample import GroundingSample

__all__ = ["DataConfig", "GroundingSample", "detect_format", "load_samples"]
