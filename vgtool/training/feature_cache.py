"""Caches of frozen-encoder outputs for training.

While a backbone is frozen its output for a given input never changes, so computing it again every
epoch is wasted work. :class:`TextFeatureCache` keeps the text encoder's output per phrase (a
flipped phrase with left/right swapped is just another phrase); :class:`ImageFeatureCache` keeps
the vision backbone's output per image file and flip, ``(image path, mirrored)``, so the many
phrases of one image share one entry. That is valid only while augmentation at most mirrors the
image (no random crop, no colour jitter): a flipped image is simply another key, cached beside the
unflipped one. Both are explicit objects owned by the trainer; the model itself holds no state.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from vgtool.atomic import write_bytes_atomic
from vgtool.data.tokenize import PhraseTokenizer
from vgtool.training.augment import AugmentConfig, only_mirrors

logger = logging.getLogger(__name__)

ImageKey = tuple[str, bool]  # (image path, mirrored): one backbone input


class TextFeatureCache:
    """Frozen text-encoder features per phrase, stored unpadded (fp16) on the CPU.

    A phrase's features must not depend on which phrases it was encoded with: on CPU, a batch's size
    and padded length change how the matrix products are blocked, hence the last bits of the result,
    and a resumed run would then see other features than an uninterrupted one. So the trainer
    encodes every phrase it can draw up front (:meth:`prefill`), in one fixed order, and a phrase
    missing from that is encoded on its own.
    """

    BATCH = 256

    def __init__(self, model, tokenizer: PhraseTokenizer, device: torch.device, dtype=torch.float16):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.store: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    @torch.no_grad()
    def _encode(self, phrases: Sequence[str]) -> None:
        tokens = self.tokenizer(list(phrases))
        features = self.model.encode_text_features(
            tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
        )
        lengths = tokens["attention_mask"].sum(1).tolist()
        for phrase, feats, length in zip(phrases, features, lengths, strict=True):
            self.store[phrase] = feats[: int(length)].to("cpu", self.dtype)

    def prefill(self, phrases: Sequence[str]) -> int:
        """Encode ``phrases`` (any order, repeats allowed) in batches fixed by the set of phrases alone:
        sorted by length, then text (little padding). Returns how many were encoded."""
        missing = sorted({p for p in phrases if p not in self.store}, key=lambda p: (len(p), p))
        for start in range(0, len(missing), self.BATCH):
            self._encode(missing[start : start + self.BATCH])
        self.misses += len(missing)
        return len(missing)

    def _fill(self, phrases: Sequence[str]) -> None:
        missing = list(dict.fromkeys(p for p in phrases if p not in self.store))
        self.misses += len(missing)
        for phrase in missing:  # alone: its features then do not depend on the batch it came in
            self._encode([phrase])

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
    """Frozen vision-backbone features per :data:`ImageKey`, fp16 in CPU memory or on disk.

    The on-disk store keeps one safetensors file per key in ``directory`` (features plus the image
    path, flip and size in its metadata), so a resumed run finds the features of its first try.
    Use one directory per backbone state (see :func:`backbone_fingerprint`).

    Attributes:
        sizes: displayed ``(width, height)`` per cached key; the training dataset reads it to skip
            decoding cached images.
        hits: batch rows served from the cache; misses: images encoded.
    """

    def __init__(self, model, device: torch.device, dtype=torch.float16, directory: str | Path | None = None):
        self.model = model
        self.device = device
        self.dtype = dtype
        self.directory = Path(directory) if directory is not None else None
        self.store: dict[ImageKey, torch.Tensor] = {}
        self.sizes: dict[ImageKey, tuple[int, int]] = {}
        self.hits = 0
        self.misses = 0
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._index_directory()

    @property
    def where(self) -> str:
        """Where features live, in words (for the log)."""
        dtype = str(self.dtype).removeprefix("torch.")
        return f"{dtype}, on disk in {self.directory}" if self.directory else f"{dtype}, in memory"

    def __len__(self) -> int:
        return len(self.sizes)

    def __contains__(self, key: ImageKey) -> bool:
        return key in self.sizes

    @torch.no_grad()
    def __call__(
        self,
        keys: Sequence[ImageKey],
        pixels: torch.Tensor,
        pixel_rows: Sequence[int],
        sizes: Sequence[tuple[int, int]],
    ) -> torch.Tensor:
        """Features of a batch, encoding only the images not cached yet (each once).

        Args:
            keys: per batch row, ``(image path, mirrored)``.
            pixels: ``[M, 3, S, S]`` normalised images (on the device) of the rows ``pixel_rows``;
                rows whose key is cached need none.
            pixel_rows: ``[M]`` the batch row of each image in ``pixels``.
            sizes: per batch row, the displayed ``(width, height)`` of the image file.

        Returns:
            ``[B, C, h, w]`` float32 features on the device.

        Raises:
            ValueError: a key is neither cached nor among the decoded rows.
        """
        first_pixel_row: dict[ImageKey, int] = {}
        for m, row in enumerate(pixel_rows):
            first_pixel_row.setdefault(keys[row], m)
        missing = [key for key in dict.fromkeys(keys) if key not in self.sizes]
        for key in missing:
            if key is None or key not in first_pixel_row:
                raise ValueError(f"{key}: image features are not cached and the image was not decoded")
        if missing:
            chosen = torch.tensor([first_pixel_row[key] for key in missing], device=pixels.device)
            features = self.model.encode_image_features(pixels[chosen])  # [K, C, h, w]
            for key, feats in zip(missing, features, strict=True):
                self._put(key, feats, sizes[keys.index(key)])
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        items = [self._get(key) for key in keys]
        dtype = torch.float32 if any(x.dtype == torch.float32 for x in items) else self.dtype
        return torch.stack([x.to(dtype) for x in items]).to(self.device, non_blocking=True).float()

    def _put(self, key: ImageKey, features: torch.Tensor, size: tuple[int, int]) -> None:
        stored = features.to("cpu", self.dtype)
        if not torch.isfinite(stored).all():  # beyond fp16's range: keep this one exact instead
            logger.warning("%s: backbone features overflow %s; cached as float32", key[0], self.dtype)
            stored = features.to("cpu", torch.float32)
        self.sizes[key] = (int(size[0]), int(size[1]))
        if self.directory is None:
            self.store[key] = stored
            return
        from safetensors.torch import save

        metadata = {
            "path": key[0],
            "mirrored": str(int(key[1])),
            "width": str(size[0]),
            "height": str(size[1]),
        }
        write_bytes_atomic(self._file(key), save({"features": stored.contiguous()}, metadata=metadata))

    def _get(self, key: ImageKey) -> torch.Tensor:
        if self.directory is None:
            return self.store[key]
        from safetensors.torch import load_file

        return load_file(str(self._file(key)))["features"]

    def _file(self, key: ImageKey) -> Path:
        digest = hashlib.sha1(f"{key[0]}\0{int(key[1])}".encode(), usedforsecurity=False).hexdigest()
        return self.directory / f"{digest}.safetensors"

    def _index_directory(self) -> None:
        from safetensors import safe_open

        for path in sorted(self.directory.glob("*.safetensors")):
            try:
                with safe_open(str(path), "pt") as handle:
                    meta = handle.metadata() or {}
                key = (meta["path"], meta["mirrored"] == "1")
                if self._file(key) == path:
                    self.sizes[key] = (int(meta["width"]), int(meta["height"]))
            except (OSError, KeyError, ValueError, RuntimeError):  # unreadable: encoded again when needed
                continue


def image_cache_blocker(enabled: bool, vision_frozen: bool, augment: AugmentConfig | None) -> str | None:
    """Why vision features cannot be cached in a stage, or None when they can.

    Args:
        enabled: the recipe's ``cache_features``.
        vision_frozen: whether the stage leaves the vision backbone frozen.
        augment: the training augmentation; a flip is fine (cached per orientation), a crop or
            colour jitter makes every input new.
    """
    if not enabled:
        return "cache_features is off"
    if not vision_frozen:
        return "the vision backbone is trained in this stage"
    if not only_mirrors(augment):
        return "augmentation crops or colour-jitters the backbone input"
    return None


def backbone_fingerprint(model, *parts: object) -> str:
    """A short hash of the vision backbone's weights and ``parts`` (preprocessing, precision):
    an on-disk cache made under another fingerprint does not apply."""
    digest = hashlib.sha256(repr(parts).encode())
    for name, tensor in sorted(model.vision.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]
