"""Procedural referring-expression data (CLEVR-Ref+ style): shapes, phrases and COCO files, no torch."""

from __future__ import annotations

from vgtool.synth.generate import generate_dataset, generate_example
from vgtool.synth.parse import parse_phrase
from vgtool.synth.query import AmbiguousQueryError, Query, resolve
from vgtool.synth.vocabulary import grammar_markdown

__all__ = [
    "AmbiguousQueryError",
    "Query",
    "generate_dataset",
    "generate_example",
    "grammar_markdown",
    "parse_phrase",
    "resolve",
]
