"""Grounding model families behind one protocol; see :mod:`vgtool.grounders.base`."""

from vgtool.grounders.base import EncodedPhrases, Grounder
from vgtool.grounders.registry import FAMILIES, load_grounder

__all__ = ["FAMILIES", "EncodedPhrases", "Grounder", "load_grounder"]
