"""Phrases and the ontology: each phrase maps to a COCO category.

``"red car=car"`` grounds the phrase "red car" and files its boxes under category "car", so several
phrases can feed one category. A phrase without ``=`` is its own category.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from vgtool.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhraseSpec:
    """One phrase to ground and the category its boxes belong to."""

    text: str
    category: str


@dataclass(frozen=True)
class Ontology:
    """The run's phrases (unique, in order) and categories (in order of first use, ids from 1)."""

    phrases: tuple[PhraseSpec, ...]
    categories: tuple[str, ...]

    def category_id(self, phrase_index: int) -> int:
        return self.categories.index(self.phrases[phrase_index].category) + 1

    @cached_property
    def texts(self) -> list[str]:
        """The phrase texts, by phrase id."""
        return [p.text for p in self.phrases]

    @cached_property
    def category_ids(self) -> list[int]:
        """Each phrase's COCO category id, by phrase id."""
        return [self.category_id(i) for i in range(len(self.phrases))]

    @cached_property
    def phrase_categories(self) -> list[str]:
        """Each phrase's category name, by phrase id."""
        return [p.category for p in self.phrases]


def parse_phrase(text: str) -> PhraseSpec:
    """``"red car=car"`` -> PhraseSpec("red car", "car"); ``"red car"`` -> its own category.

    Raises:
        InputError: the phrase or its class name is empty.
    """
    raw = unicodedata.normalize("NFC", text)
    phrase, sep, category = raw.rpartition("=")
    if not sep:
        phrase, category = raw, raw
    phrase, category = " ".join(phrase.split()), " ".join(category.split())
    if not phrase:
        raise InputError(f"phrase {text!r} is empty")
    if not category:
        raise InputError(f"phrase {text!r} has an empty class name after '='")
    return PhraseSpec(phrase, category)


def read_phrases_file(path: str | Path) -> list[str]:
    """Phrases from a text file, one per line; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read phrases file ({err})") from err
    return [line for line in (raw.strip() for raw in lines) if line and not line.startswith("#")]


def build_ontology(phrases: Sequence[str], phrase_files: Iterable[str | Path] = ()) -> Ontology:
    """Parse ``--phrase`` values and ``--phrases-file`` contents into an :class:`Ontology`.

    Duplicates (same phrase text) are dropped with a warning; the first class name given wins.

    Raises:
        InputError: no phrases, or an empty phrase.
    """
    texts = list(phrases)
    for path in phrase_files:
        texts.extend(read_phrases_file(path))
    specs: dict[str, PhraseSpec] = {}
    for text in texts:
        if not text.strip():
            raise InputError("a phrase is empty or whitespace only")
        spec = parse_phrase(text)
        if spec.text in specs:
            if specs[spec.text].category != spec.category:
                logger.warning(
                    "phrase %r given twice with different classes; keeping %r",
                    spec.text,
                    specs[spec.text].category,
                )
            else:
                logger.warning("phrase %r given twice; grounding it once", spec.text)
            continue
        specs[spec.text] = spec
    if not specs:
        raise InputError("no phrases: give --phrase TEXT (repeatable) or --phrases-file FILE")
    categories = tuple(dict.fromkeys(spec.category for spec in specs.values()))
    return Ontology(phrases=tuple(specs.values()), categories=categories)
