"""The text encoder: any transformers encoder, by hub id, local folder or packaged model; or CLIP's
text tower (``TextConfig.source = "open_clip"``, :mod:`vgtool.models.clip`)."""

from __future__ import annotations

import torch
from torch import nn

from vgtool.data.tokenize import PhraseTokenizer
from vgtool.errors import ConfigError
from vgtool.models.config import TextConfig
from vgtool.models.hub import quiet_transformers, resolve_model_name, resolve_pretrained_error
from vgtool.torchvision_compat import ensure_torchvision_importable


def load_tokenizer(config: TextConfig):
    """The tokenizer that belongs to ``config.name`` (a fast tokenizer when one exists)."""
    if config.source == "open_clip":
        from vgtool.data.clip_tokenizer import ClipTokenizer

        return ClipTokenizer()
    quiet_transformers()
    from transformers import AutoTokenizer

    location, _ = resolve_model_name(config.name)
    try:
        return AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as err:
        raise resolve_pretrained_error(f"tokenizer {config.name}", err) from err


def phrase_tokenizer(config: TextConfig) -> PhraseTokenizer:
    """The tokenizer of the text encoder ``config`` describes, truncating at its ``max_length``."""
    return PhraseTokenizer(load_tokenizer(config), config.max_length)


def build_text_encoder(config: TextConfig) -> nn.Module:
    """The encoder ``config.source`` names: a :class:`TextEncoder`, or CLIP's text tower (both map
    ``[P, T]`` ids and mask to ``[P, T, embed_dim]`` token features)."""
    if config.source == "open_clip":
        from vgtool.models.clip import ClipTextTower

        tower = ClipTextTower(config.name, pretrained=config.pretrained, overrides=config.overrides)
        if config.max_length > tower.context_length:
            raise ConfigError(
                f"text.max_length is {config.max_length}, but CLIP's text tower takes at most "
                f"{tower.context_length} tokens"
            )
        return tower
    return TextEncoder(config)


class TextEncoder(nn.Module):
    """Encodes tokenised phrases into per-token features.

    Attributes:
        embed_dim: width of the returned token features.
    """

    def __init__(self, config: TextConfig):
        super().__init__()
        ensure_torchvision_importable()
        quiet_transformers()
        from transformers import AutoConfig, AutoModel

        self.config = config
        location, self.location_kind = resolve_model_name(config.name)
        self.location = location
        try:
            if config.pretrained:
                model = AutoModel.from_pretrained(location, add_pooling_layer=False)
            else:
                hf_config = AutoConfig.from_pretrained(location, **config.overrides)
                model = AutoModel.from_config(hf_config, add_pooling_layer=False)
        except TypeError:  # encoders without a pooling layer argument
            if config.pretrained:
                model = AutoModel.from_pretrained(location)
            else:
                model = AutoModel.from_config(AutoConfig.from_pretrained(location, **config.overrides))
        except (OSError, ValueError) as err:
            raise resolve_pretrained_error(f"text encoder {config.name}", err) from err
        self.model = model
        self.embed_dim = int(model.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encode phrases.

        Args:
            input_ids: ``[P, T]`` token ids.
            attention_mask: ``[P, T]``, 1 for real tokens and 0 for padding.

        Returns:
            ``[P, T, embed_dim]`` token features.
        """
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
