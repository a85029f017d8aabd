"""Caches of frozen-encoder outputs for training.

While a backbone is frozen its output for a given input never changes, so computing it again every
epoch is wasted work. :class:`TextFeatureCache` keeps the text encoder's output per phrase (a
flipped phrase with left/right swapped is just another phrase); :class:`ImageFeatureCache` keeps
the vision backbone's output per sample, valid only while augmentation leaves the backbone input
unchanged. Both are explicit objects owned by the trainer; the model itself holds no state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vgtool.data.tokenize import PhraseTokenizer


class TextFeatureCache:
    """Frozen text-encoder features per phrase, stored unpadded (fp16) on the CPU."""

    def __init__(self, model, tokenizer: PhraseTokenizer, device: torch.device, dtype=torch.float16):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.store: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    @torch.no_grad()
    def _fill(self, phrases: Sequence[str]) -> None:
        missing = list(dict.fromkeys(p for p in phrases if p not in self.store))
        self.misses += len(missing)
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            tokens = self.tokenizer(chunk)
            features = self.model.encode_text_features(
                tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
            )
            lengths = tokens["attention_mask"].sum(1).tolist()
            for phrase, feats, length in zip(chunk, features, lengths, strict=True):
                self.store[phrase] = feats[: int(length)].to("cpu", self.dtype)

    def __call__(self, phrases: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[B, T, C]`` (zero-padded, float32, on the device) and mask ``[B, T]``."""
        self._fill(phrases)
        self.hits += len(phrases)
        items = [self.store[p] for p in phrases]
        longest = max(len(x) for x in items)
        features = torch.zeros(len(items), longest, items[0].shape[-1])
        mask = torch.zeros(len(items), longest, dtype=torch.long)
        for i, x in enumerate(items):
            features[i, : len(x)] = x.float()
            mask[i, : len(x)] = 1
        return features.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)


class ImageFeatureCache:
    """Frozen vision-backbone features per sample index, stored fp16 on the CPU (or on disk by the
    caller's choice of device for ``store``)."""

    def __init__(self, model, device: torch.device, dtype=torch.float16):
        self.model = model
        self.device = device
        self.dtype = dtype
        self.store: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, indices: Sequence[int], pixels: torch.Tensor | None) -> torch.Tensor:
        """``[B, C, h, w]`` features for samples ``indices``; ``pixels`` (normalised, on the device)
        are used only for samples not cached yet, and may be None when all are cached."""
        missing = [i for i, index in enumerate(indices) if index not in self.store]
        if missing:
            features = self.model.encode_image_features(pixels[missing])
            for row, i in enumerate(missing):
                self.store[int(indices[i])] = features[row].to("cpu", self.dtype)
        return torch.stack([self.store[int(i)] for i in indices]).to(self.device, torch.float32)

    def has_all(self, indices: Sequence[int]) -> bool:
        return all(int(i) in self.store for i in indices)
