"""Phrase tokenisation, kept in the data path (never inside the model's forward)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)


class PhraseTokenizer:
    """Tokenises phrases to padded ``input_ids``/``attention_mask`` tensors of at most ``max_length``."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def token_count(self, phrase: str) -> int:
        return len(self.tokenizer(phrase, add_special_tokens=True)["input_ids"])

    def truncated(self, phrases: Sequence[str]) -> list[str]:
        """The phrases that exceed ``max_length`` tokens and will be truncated."""
        return [p for p in phrases if self.token_count(p) > self.max_length]

    def __call__(self, phrases: Sequence[str]) -> dict[str, torch.Tensor]:
        """Returns ``input_ids`` and ``attention_mask``, both ``[P, T]`` with ``T <= max_length``."""
        encoded = self.tokenizer(
            list(phrases),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
