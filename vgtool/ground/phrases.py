"""Phrases and the ontology: each phrase maps to a COCO category.

``"red car=car"`` grounds the phrase "red car" and files its boxes under category "car", so several
phrases can feed one category. A phrase without ``=`` is its own category. Categories get ids from
1 in order of first use, unless a categories file (a COCO file, or a names list) pins the ids and
names of an existing dataset.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

from vgtool.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhraseSpec:
    """One phrase to ground and the category its boxes belong to."""

    text: str
    category: str


class Category(NamedTuple):
    """A COCO category record."""

    id: int
    name: str
    supercategory: str = "object"


@dataclass(frozen=True)
class Ontology:
    """The run's phrases (unique, in order) and the categories of the output, in id order.

    Every phrase's category is among ``categories``; a categories file may add categories that no
    phrase uses (they are written all the same, so ids match the dataset the file came from).
    """

    phrases: tuple[PhraseSpec, ...]
    categories: tuple[Category, ...]

    @cached_property
    def _ids_by_name(self) -> dict[str, int]:
        return {c.name: c.id for c in self.categories}

    def category_id(self, phrase_index: int) -> int:
        return self._ids_by_name[self.phrases[phrase_index].category]

    @cached_property
    def category_names(self) -> dict[int, str]:
        """Category id -> name."""
        return {c.id: c.name for c in self.categories}

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


def read_categories_file(path: str | Path) -> tuple[Category, ...]:
    """Categories to pin: a COCO file's ``categories`` (ids, names, supercategories kept) or a
    names list, one per line (ids from 1; blank lines and ``#`` comments skipped).

    Raises:
        InputError: the file cannot be read, has no categories, or repeats an id or a name.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read categories file ({err})") from err
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            records = json.loads(text).get("categories")
            categories = tuple(
                Category(
                    int(r["id"]), " ".join(str(r["name"]).split()), str(r.get("supercategory", "object"))
                )
                for r in records
            )
        except (json.JSONDecodeError, AttributeError, TypeError, KeyError, ValueError) as err:
            raise InputError(
                f"{path}: not a COCO file with a 'categories' list of {{id, name}} ({err})"
            ) from None
    else:
        names = [" ".join(line.split()) for line in text.splitlines()]
        names = [n for n in names if n and not n.startswith("#")]
        categories = tuple(Category(i, name) for i, name in enumerate(names, start=1))
    if not categories:
        raise InputError(f"{path}: no categories in the file")
    for field_name in ("id", "name"):
        values = [getattr(c, field_name) for c in categories]
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated:
            raise InputError(f"{path}: category {field_name} {repeated[0]!r} appears more than once")
    return tuple(sorted(categories, key=lambda c: c.id))


def build_ontology(
    phrases: Sequence[str],
    phrase_files: Iterable[str | Path] = (),
    categories_file: str | Path | None = None,
) -> Ontology:
    """Parse ``--phrase`` values and ``--phrases-file`` contents into an :class:`Ontology`.

    Duplicates (same phrase text) are dropped with a warning; the first class name given wins.

    Args:
        categories_file: pins category ids and names (see :func:`read_categories_file`); every
            phrase's class must be one of its names.

    Raises:
        InputError: no phrases, an empty phrase, or a class missing from the categories file.
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
    used = list(dict.fromkeys(spec.category for spec in specs.values()))
    if categories_file is None:
        categories = tuple(Category(i, name) for i, name in enumerate(used, start=1))
    else:
        categories = read_categories_file(categories_file)
        known = {c.name for c in categories}
        for spec in specs.values():
            if spec.category not in known:
                raise InputError(
                    f"{categories_file}: class {spec.category!r} (of phrase {spec.text!r}) is not one of "
                    f"its {len(known)} categories; file the phrase under one of them with "
                    f"'{spec.text}=<class>'"
                )
    return Ontology(phrases=tuple(specs.values()), categories=categories)
