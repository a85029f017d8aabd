"""CLIP's image and text towers from open_clip (the optional ``clip`` extra: ``open-clip-torch``).

A CLIP model is named as open_clip lists it, ``MODEL:TAG`` (``RN50:openai``): a built-in model
config and the tag of its pretrained weights. ``MODEL`` alone (or ``pretrained=False``) builds
random weights from the config, offline; the tag still sets the architecture details its weights
were trained with (OpenAI's models use QuickGELU). ``overrides`` are merged into open_clip's model
config (nested mappings key by key): tiny models for tests.

Each tower keeps only its half of the CLIP model. Images reach :class:`ClipImageTower` normalised
with its own ``mean``/``std`` at its ``image_size``; phrases reach :class:`ClipTextTower` tokenised by
:class:`~vgtool.data.clip_tokenizer.ClipTokenizer`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vgtool.errors import ConfigError, ModelSourceError
from vgtool.models.hub import resolve_pretrained_error
from vgtool.torchvision_compat import ensure_torchvision_importable


def _open_clip():
    ensure_torchvision_importable()
    try:
        import open_clip
    except ImportError as err:
        raise ModelSourceError(
            "CLIP towers need open_clip: pip install 'vgtool[clip]' (the open-clip-torch package)"
        ) from err
    return open_clip


def parse_clip_name(name: str) -> tuple[str, str | None]:
    """``"RN50:openai"`` -> ``("RN50", "openai")``; ``"RN50"`` -> ``("RN50", None)``."""
    model, _, tag = name.partition(":")
    if not model:
        raise ConfigError(f"CLIP model {name!r}: expected MODEL or MODEL:TAG, e.g. RN50:openai")
    return model, tag or None


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def build_clip(name: str, *, pretrained: bool, overrides: Mapping[str, Any] | None = None) -> nn.Module:
    """An ``open_clip.model.CLIP`` (both towers), with the tag's weights when ``pretrained``.

    Raises:
        ModelSourceError: an unknown model or tag, or weights that cannot be fetched.
        ConfigError: ``pretrained`` without a tag.
    """
    open_clip = _open_clip()
    model_name, tag = parse_clip_name(name)
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise ModelSourceError(f"open_clip has no built-in model named {model_name!r}")
    if config.get("custom_text") or "hf_model_name" in config.get("text_cfg", {}):
        raise ModelSourceError(
            f"open_clip:{model_name}: only models with CLIP's own text tower are supported"
        )
    weights: dict[str, Any] = {}
    if tag is not None:
        weights = open_clip.get_pretrained_cfg(model_name, tag)
        if not weights:
            known = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
            raise ModelSourceError(f"open_clip:{model_name} has no pretrained tag {tag!r} (known: {known})")
        config["quick_gelu"] = bool(weights.get("quick_gelu", config.get("quick_gelu", False)))
    elif pretrained:
        raise ConfigError(f"CLIP model {name!r} names no pretrained tag (MODEL:TAG); or use pretrained=false")
    config = _merge(config, overrides or {})
    model = open_clip.model.CLIP(**config)
    if pretrained:
        try:
            path = open_clip.download_pretrained(weights)
            if not path:
                raise OSError("no download location")
            open_clip.load_checkpoint(model, path, strict=True)
        except (OSError, RuntimeError, ValueError) as err:
            raise resolve_pretrained_error(f"open_clip:{name}", err) from err
    return model


def clip_image_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The ``(mean, std)`` of RGB in [0, 1] that CLIP ``name``'s image tower expects."""
    open_clip = _open_clip()
    model_name, tag = parse_clip_name(name)
    weights = open_clip.get_pretrained_cfg(model_name, tag) if tag else {}
    mean = weights.get("mean", open_clip.OPENAI_DATASET_MEAN)
    std = weights.get("std", open_clip.OPENAI_DATASET_STD)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


class ClipImageTower(nn.Module):
    """CLIP's image tower: one embedding per image.

    Attributes:
        embed_dim: width of the embedding (1024 for RN50).
        image_size: square input side the tower was built for.
        mean, std: per-channel normalisation of RGB in [0, 1] it expects.
    """

    def __init__(self, name: str, *, pretrained: bool, overrides: Mapping[str, Any] | None = None):
        super().__init__()
        self.name = name
        self.visual = build_clip(name, pretrained=pretrained, overrides=overrides).visual
        self.embed_dim = int(self.visual.output_dim)
        size = self.visual.image_size
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        self.mean, self.std = clip_image_normalization(name)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised with ``mean``/``std`` -> ``[B, embed_dim]`` (resized to
        ``image_size`` first when H or W differ)."""
        if tuple(pixel_values.shape[-2:]) != (self.image_size, self.image_size):
            pixel_values = F.interpolate(
                pixel_values, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return self.visual(pixel_values)


class ClipTextTower(nn.Module):
    """CLIP's text tower, returning every token's feature in the joint embedding space.

    A token's feature is the transformer output after the final layer norm and the text projection;
    the phrase embedding CLIP itself uses is the feature of the end-of-text token, the last real
    token (see :meth:`embedding`). Attention is causal, so padding never changes a real token.

    Attributes:
        embed_dim: width of the features (the joint embedding width; 1024 for RN50).
        context_length: the most tokens a phrase may have.
        location_kind, location: where the weights came from, for people.
    """

    def __init__(self, name: str, *, pretrained: bool, overrides: Mapping[str, Any] | None = None):
        super().__init__()
        model = build_clip(name, pretrained=pretrained, overrides=overrides)
        self.name = name
        self.token_embedding = model.token_embedding
        self.positional_embedding = model.positional_embedding
        self.transformer = model.transformer
        self.ln_final = model.ln_final
        self.text_projection = model.text_projection
        self.register_buffer("causal_mask", model.attn_mask.clone(), persistent=False)
        self.context_length = int(model.context_length)
        projection = self.text_projection
        self.embed_dim = int(
            projection.out_features if isinstance(projection, nn.Linear) else projection.shape[1]
        )
        self.location_kind = "open_clip"
        self.location = name if pretrained else f"{name} (random weights)"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encode phrases.

        Args:
            input_ids: ``[P, T]`` CLIP token ids, ``T <= context_length``.
            attention_mask: ``[P, T]``, 1 for real tokens (unused: attention is causal).

        Returns:
            ``[P, T, embed_dim]`` projected token features.
        """
        length = input_ids.shape[1]
        if length > self.context_length:
            raise ValueError(f"{length} tokens; the CLIP text tower takes at most {self.context_length}")
        x = self.token_embedding(input_ids) + self.positional_embedding[:length]
        mask = self.causal_mask[:length, :length].to(x.dtype)
        x = self.ln_final(self.transformer(x, attn_mask=mask))  # [P, T, width], batch first
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection.to(x.dtype)

    @staticmethod
    def embedding(features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[P, T, C]`` features and ``[P, T]`` mask -> ``[P, C]``: the end-of-text token's feature."""
        last = attention_mask.long().sum(1).clamp(min=1) - 1
        return features[torch.arange(features.shape[0], device=features.device), last]
