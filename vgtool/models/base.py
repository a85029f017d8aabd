"""The seam between vgtool and a family of trainable grounding models: :class:`GroundingModel`.

Every family pairs a vision backbone and a text encoder (:mod:`vgtool.models.vision`,
:mod:`vgtool.models.text`) with a head of its own. This base holds what they share: the two encoders,
freezing them, running them alone (so the trainer can cache their outputs), and ``forward``. A family
implements three methods:

- ``project_image([B, C, h, w] backbone features) -> ImageMemory``;
- ``project_text([P, T, C] encoder features, [P, T] mask) -> TextMemory``;
- ``decode(image, text, image_index [K], text_index [K]) -> outputs`` for K (image, phrase) pairs:
  ``pred_logits`` ``[K, Q, 2]`` logits of (object, no-object), ``pred_boxes`` ``[K, Q, 4]`` cxcywh in
  [0, 1] of the image, ``aux_outputs`` (a list of dicts with those keys, possibly empty).

The trainer, the checkpoint code, the grounder and evaluation speak only to this interface; a family
is registered in :data:`vgtool.models.build.MODEL_FAMILIES`.
"""

from __future__ import annotations

import torch
from torch import nn

from vgtool.models.config import ModelConfig
from vgtool.models.memory import ImageMemory, TextMemory
from vgtool.models.text import TextEncoder
from vgtool.models.vision import VisionBackbone

Outputs = dict[str, torch.Tensor | list[dict[str, torch.Tensor]]]  # see GroundingModel.decode


class GroundingModel(nn.Module):
    """A vision backbone and a text encoder, and a family's head (see the module docstring).

    Attributes:
        config: the model's config (its ``architecture`` names the family).
        vision, text: the encoders.
        vision_frozen, text_frozen: whether each encoder is frozen (no gradients, eval mode).
        channels_last: whether images are fed to the backbone channels-last.
        head_parts: what the head holds, in words (``vgtool info``).
    """

    head_parts = "the head"

    def __init__(self, config: ModelConfig, vision: VisionBackbone, text: TextEncoder):
        super().__init__()
        self.config = config
        self.vision = vision
        self.text = text
        self.channels_last = False  # see use_channels_last
        self.set_frozen(vision=config.vision.frozen, text=config.text.frozen)

    # ---- freezing -------------------------------------------------------------------------------
    def set_frozen(self, *, vision: bool, text: bool) -> None:
        """Freeze or unfreeze the encoders (frozen ones also stay in eval mode)."""
        self.vision_frozen, self.text_frozen = vision, text
        self.vision.requires_grad_(not vision)
        self.text.requires_grad_(not text)
        self.train(self.training)

    def train(self, mode: bool = True) -> GroundingModel:
        super().train(mode)
        if getattr(self, "vision_frozen", False):
            self.vision.eval()
        if getattr(self, "text_frozen", False):
            self.text.eval()
        return self

    def use_channels_last(self) -> None:
        """Keep the vision backbone's weights channels-last and feed it channels-last images, whoever
        calls :meth:`encode_image_features` (faster where
        :func:`vgtool.models.memory_format.prefers_channels_last` says so)."""
        self.channels_last = True
        self.vision.to(memory_format=torch.channels_last)

    # ---- encoders -------------------------------------------------------------------------------
    def encode_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Run the vision backbone alone (cacheable when it is frozen).

        Args:
            pixel_values: ``[B, 3, S, S]``, normalised with the backbone's mean/std.

        Returns:
            ``[B, C, h, w]`` backbone features.
        """
        if self.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.vision_frozen):
            return self.vision(pixel_values)

    def encode_image(self, pixel_values: torch.Tensor) -> ImageMemory:
        return self.project_image(self.encode_image_features(pixel_values))

    def encode_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run the text encoder alone (cacheable per phrase when it is frozen).

        Args:
            input_ids: ``[P, T]``.
            attention_mask: ``[P, T]``, 1 for real tokens.

        Returns:
            ``[P, T, C]`` encoder features.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.text_frozen):
            return self.text(input_ids, attention_mask)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextMemory:
        """Encode tokenised phrases (``[P, T]`` ids and mask)."""
        return self.project_text(self.encode_text_features(input_ids, attention_mask), attention_mask)

    # ---- the family's head ----------------------------------------------------------------------
    def project_image(self, features: torch.Tensor) -> ImageMemory:
        """``[B, C, h, w]`` backbone features -> :class:`ImageMemory`."""
        raise NotImplementedError

    def project_text(self, features: torch.Tensor, attention_mask: torch.Tensor) -> TextMemory:
        """``[P, T, C]`` encoder features and ``[P, T]`` mask -> :class:`TextMemory`."""
        raise NotImplementedError

    def decode(
        self,
        image: ImageMemory,
        text: TextMemory,
        image_index: torch.Tensor | None = None,
        text_index: torch.Tensor | None = None,
    ) -> Outputs:
        """Ground K (image, phrase) pairs (see the module docstring for the outputs)."""
        raise NotImplementedError

    def decode_bytes_per_pair(self, num_image_tokens: int) -> int:
        """A generous estimate of the activation memory :meth:`decode` needs per pair at inference."""
        raise NotImplementedError

    # ---- both -----------------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.Tensor | None,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        *,
        image_features: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None,
        image_index: torch.Tensor | None = None,
    ) -> Outputs:
        """Ground phrase i in image i (or in image ``image_index[i]``).

        Args:
            pixel_values: ``[M, 3, S, S]`` normalised images (None when ``image_features`` is given).
            input_ids: ``[B, T]`` token ids (None when ``text_features`` is given).
            attention_mask: ``[B, T]``, 1 for real tokens.
            image_features: ``[M, C, h, w]`` cached backbone output, instead of ``pixel_values``.
            text_features: ``[B, T, C]`` cached text-encoder output, instead of ``input_ids``.
            image_index: ``[B]`` the image of each phrase, so images shared by several phrases
                are encoded once; None means ``arange(B)`` (M == B).

        Returns:
            See :meth:`decode`.
        """
        if image_features is None:
            image_features = self.encode_image_features(pixel_values)
        if text_features is None:
            text_features = self.encode_text_features(input_ids, attention_mask)
        text_index = None
        if image_index is not None:
            text_index = torch.arange(attention_mask.shape[0], device=attention_mask.device)
        image, text = self.project_image(image_features), self.project_text(text_features, attention_mask)
        return self.decode(image, text, image_index, text_index)


def pair_indices(
    image: ImageMemory, text: TextMemory, image_index: torch.Tensor | None, text_index: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``decode``'s pair indices with their defaults filled in: ``arange(B)`` for both (pair i =
    image i with phrase i, which needs B == P), and ``text_index = image_index`` when only the
    latter is given."""
    if image_index is None:
        if image.tokens.shape[0] != text.tokens.shape[0]:
            raise ValueError(
                f"{image.tokens.shape[0]} images and {text.tokens.shape[0]} phrases: pass image_index/text_index"
            )
        image_index = torch.arange(image.tokens.shape[0], device=image.tokens.device)
    return image_index, image_index if text_index is None else text_index
