"""Parse a synthetic phrase back into its ``Query`` (the inverse of ``query.to_text``).

Used to check generated data independently of the generator: ``resolve(parse_phrase(p), scene)`` must
give exactly the objects a phrase was annotated with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Container

from vgtool.synth.query import Query
from vgtool.synth.vocabulary import COLOURS, GENERIC_NOUN, RELATIONS, SHAPES, SIZES, SUPERLATIVES

_PLURAL_TO_SHAPE = {plural: shape for shape, plural in SHAPES.items()}
_RELATION_WORDS = {tuple(r.split()): r for r in RELATIONS}


class PhraseParseError(ValueError):
    """The text is not a phrase of the synthetic grammar."""


class _Tokens:
    """A cursor over the words of a phrase."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.words = text.lower().split()
        self.pos = 0

    def peek(self) -> str | None:
        return self.words[self.pos] if self.pos < len(self.words) else None

    def take(self) -> str:
        word = self.peek()
        if word is None:
            raise PhraseParseError(f"{self.text!r}: ends too early")
        self.pos += 1
        return word

    def take_if(self, vocabulary: Container[str]) -> str | None:
        word = self.peek()
        if word is not None and word in vocabulary:
            self.pos += 1
            return word
        return None

    def take_relation(self) -> str | None:
        for words, relation in _RELATION_WORDS.items():
            if tuple(self.words[self.pos : self.pos + len(words)]) == words:
                self.pos += len(words)
                return relation
        return None


def _noun_phrase(tokens: _Tokens, allow_superlative: bool) -> Query:
    determiner = tokens.take()
    if determiner not in ("the", "all"):
        raise PhraseParseError(f"{tokens.text!r}: expected 'the' or 'all', got {determiner!r}")
    plural = determiner == "all"
    superlative = tokens.take_if(SUPERLATIVES) if allow_superlative and not plural else None
    size = tokens.take_if(SIZES)
    colour = tokens.take_if(COLOURS)
    noun = tokens.take()
    if plural:
        if noun != GENERIC_NOUN[1] and noun not in _PLURAL_TO_SHAPE:
            raise PhraseParseError(f"{tokens.text!r}: expected a plural noun, got {noun!r}")
        shape = _PLURAL_TO_SHAPE.get(noun)
    else:
        if noun != GENERIC_NOUN[0] and noun not in SHAPES:
            raise PhraseParseError(f"{tokens.text!r}: expected a singular noun, got {noun!r}")
        shape = noun if noun in SHAPES else None
    try:
        return Query(size=size, colour=colour, shape=shape, plural=plural, superlative=superlative)
    except ValueError as exc:
        raise PhraseParseError(f"{tokens.text!r}: {exc}") from exc


def parse_phrase(text: str) -> Query:
    """Parse ``text`` (case and spacing are ignored) into a ``Query``.

    Raises:
        PhraseParseError: the text uses a word outside the vocabulary or breaks the grammar.
    """
    tokens = _Tokens(text)
    query = _noun_phrase(tokens, allow_superlative=True)
    relation = tokens.take_relation()
    if relation is not None:
        reference = _noun_phrase(tokens, allow_superlative=False)
        try:
            query = dataclasses.replace(query, relation=relation, reference=reference)
        except ValueError as exc:
            raise PhraseParseError(f"{text!r}: {exc}") from exc
    if tokens.peek() is not None:
        raise PhraseParseError(f"{text!r}: unexpected {tokens.peek()!r}")
    return query
