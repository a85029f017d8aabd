"""vgtool: ground natural-language phrases in images with the VL-GTR model."""

__version__ = "0.1.0"
