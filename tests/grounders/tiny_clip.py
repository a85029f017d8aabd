"""Test helpers: a CLIP BPE tokenizer built offline from a small synthetic vocabulary.

The vocabulary is laid out as CLIP's: the 256 byte-unicode symbols, the same with ``</w>``, one
token per merge, then ``<|startoftext|>`` and ``<|endoftext|>`` (the highest id, as the OWL and
OmDet-Turbo text models expect: they pool the hidden state at the argmax of ``input_ids``). The
merges spell out, left to right, every word the tests use, so each such word is a single token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# The words the grounder tests use in their phrases (any other word is spelled byte by byte).
WORDS = (
    "a",
    "photo",
    "of",
    "cat",
    "dog",
    "red",
    "car",
    "the",
    "man",
    "in",
    "shirt",
    "blue",
    "square",
    "left",
    "star",
    "detect",
)


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map from the 256 byte values to printable characters."""
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def vocab_and_merges(words: Iterable[str] = WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style ``(vocab, merges)`` in which each of ``words`` is one token."""
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    merges: list[tuple[str, str]] = []
    for word in words:
        if not re.fullmatch(r"[a-z]+", word):
            raise ValueError(f"test words are lowercase ASCII letters, got {word!r}")
        symbols = [*word[:-1], word[-1] + "</w>"]
        merged = symbols[0]
        for symbol in symbols[1:]:
            merge = (merged, symbol)
            merged += symbol
            if merge not in merges:
                merges.append(merge)
                tokens.append(merged)
    vocab = {token: i for i, token in enumerate(dict.fromkeys([*tokens, BOS, EOS]))}
    return vocab, merges


def clip_tokenizer(*, pad_token: str, model_max_length: int):
    """A ``CLIPTokenizer`` over :func:`vocab_and_merges` (transformers 5 takes ``vocab=``/``merges=``).

    Args:
        pad_token: ``"!"`` for the OWL checkpoints, ``"<|endoftext|>"`` for OmDet-Turbo.
        model_max_length: 16 for OWL, 77 for OmDet-Turbo.
    """
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=model_max_length)


def vocab_size() -> int:
    """How many ids :func:`clip_tokenizer` uses (a tiny text model's ``vocab_size`` must cover it)."""
    return len(vocab_and_merges()[0])
