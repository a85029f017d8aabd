"""The ``fusion`` family: global CLIP embeddings fused with a feature map, one box per phrase.

image  -> HRNet map [C, h, w] -> 1x1 conv -> [map_channels, h, w]                       \\
image  -> CLIP image embedding [E] -> 1x1 conv -> [embed_channels], broadcast to h x w   -> concat
phrase -> CLIP text embedding [E]  -> 1x1 conv -> [embed_channels], broadcast to h x w   /
concat [2 * embed_channels + map_channels, h, w] -> (3x3 conv, batch norm, ReLU, dropout) x L
-> global average pool [fused_dim] -> regressor -> (x, y, w, h) of the top-left corner and size,
normalised (the seed's box format), turned into cxcywh at the output; and a confidence (the
predicted IoU of that box with the truth) from the same pooled vector.

The CLIP image embedding comes packed with the map out of the vision encoder
(:mod:`vgtool.models.fusion_vision`); without CLIP (``fusion.clip_image: null``) the map's spatial
mean stands in for it. The text embedding is CLIP's end-of-text token feature, or the masked mean of
a transformers encoder's tokens. A 1x1 convolution of a broadcast vector is that vector's linear
map, broadcast: it is computed once per image or phrase and broadcast when the pairs are decoded.
"""

from __future__ import annotations

import torch
from torch import nn

from vgtool import box_ops
from vgtool.models.base import GroundingModel, Outputs, pair_indices
from vgtool.models.config import ModelConfig
from vgtool.models.fusion_vision import FusionVision
from vgtool.models.memory import ImageMemory, TextMemory
from vgtool.models.vision import VisionBackbone


class FusionModel(GroundingModel):
    """The fusion grounding model. See the module docstring for the data flow."""

    head_parts = "1x1 reductions, fusion convolutions, box regressor, confidence"

    def __init__(self, config: ModelConfig, vision: FusionVision, text: nn.Module):
        super().__init__(config, vision, text)
        head = config.fusion
        self.image_reduce = nn.Conv2d(vision.image_embed_dim, head.embed_channels, 1)
        self.text_reduce = nn.Conv2d(text.embed_dim, head.embed_channels, 1)
        self.map_reduce = nn.Conv2d(vision.map_dim, head.map_channels, 1)
        blocks: list[nn.Module] = []
        width = 2 * head.embed_channels + head.map_channels
        for _ in range(head.fusion_layers):
            blocks += [
                nn.Conv2d(width, head.fused_dim, 3, padding=1, bias=False),
                nn.BatchNorm2d(head.fused_dim),
                nn.ReLU(inplace=True),
                nn.Dropout(head.dropout),
            ]
            width = head.fused_dim
        self.fusion = nn.Sequential(*blocks)
        self.regressor = nn.Sequential(
            nn.Linear(head.fused_dim, head.regressor_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(head.dropout),
            nn.Linear(head.regressor_dim, 4),
        )
        self.confidence = nn.Linear(head.fused_dim, 1)

    # ---- projections ----------------------------------------------------------------------------
    def project_image(self, features: torch.Tensor) -> ImageMemory:
        """``[B, C(+k), h, w]`` vision features -> :class:`ImageMemory` whose ``tokens`` (and
        ``keys``, the same tensor) are ``[B, h*w, embed_channels + map_channels]``: the reduced image
        embedding (the same at every cell), then the reduced map."""
        feature_map, embedding = self.vision.split(features)
        _, _, height, width = feature_map.shape
        image_part = self.image_reduce(embedding[:, :, None, None].to(feature_map.dtype))  # [B, E', 1, 1]
        map_part = self.map_reduce(feature_map)  # [B, M', h, w]
        cells = torch.cat([image_part.expand(-1, -1, height, width), map_part], 1)
        tokens = cells.flatten(2).transpose(1, 2)  # [B, h*w, E' + M']
        return ImageMemory(tokens=tokens, keys=tokens, grid=(height, width))

    def project_text(self, features: torch.Tensor, attention_mask: torch.Tensor) -> TextMemory:
        """``[P, T, C]`` encoder features and ``[P, T]`` mask -> :class:`TextMemory` whose
        ``pooled`` is the reduced phrase embedding ``[P, embed_channels]``."""
        valid = attention_mask.bool()
        if self.config.text.source == "open_clip":
            last = valid.long().sum(1).clamp(min=1) - 1  # the end-of-text token: CLIP's embedding
            embedding = features[torch.arange(features.shape[0], device=features.device), last]
        else:
            weights = valid.unsqueeze(-1).to(features.dtype)
            embedding = (features * weights).sum(1) / weights.sum(1).clamp(min=1)
        pooled = self.text_reduce(embedding[:, :, None, None]).flatten(1)  # [P, E']
        return TextMemory(tokens=features, keys=features, valid=valid, pooled=pooled)

    # ---- decoding -------------------------------------------------------------------------------
    def decode(
        self,
        image: ImageMemory,
        text: TextMemory,
        image_index: torch.Tensor | None = None,
        text_index: torch.Tensor | None = None,
    ) -> Outputs:
        """Ground K (image, phrase) pairs, one box each.

        Args:
            image: B encoded images.
            text: P encoded phrases.
            image_index, text_index: ``[K]`` the image and phrase of each pair (default: pair i =
                image i with phrase i).

        Returns:
            ``pred_logits``: ``[K, 1, 2]``; ``softmax(...)[..., 0]`` is the box's confidence.
            ``pred_boxes``: ``[K, 1, 4]`` cxcywh, normalised to [0, 1] of the image (the regressed
            top-left corner and size, clipped to the image).
            ``aux_outputs``: ``[]``.
        """
        image_index, text_index = pair_indices(image, text, image_index, text_index)
        height, width = image.grid
        cells = image.tokens.index_select(0, image_index).transpose(1, 2)  # [K, E' + M', h*w]
        cells = cells.reshape(cells.shape[0], cells.shape[1], height, width)
        phrase = text.pooled.index_select(0, text_index).to(cells.dtype)  # [K, E']
        embed = phrase.shape[1]
        fused_in = torch.cat(
            [cells[:, :embed], phrase[:, :, None, None].expand(-1, -1, height, width), cells[:, embed:]], 1
        )  # [K, 2E' + M', h, w]: image, text, map
        pooled = self.fusion(fused_in).mean(dim=(2, 3))  # [K, fused_dim]
        boxes_xywh = self.regressor(pooled).sigmoid()  # [K, 4] top-left corner and size in [0, 1]
        boxes_xyxy = box_ops.xywh_to_xyxy(boxes_xywh).clamp(max=1.0)
        boxes_cxcywh = box_ops.xyxy_to_cxcywh(boxes_xyxy)
        confidence = self.confidence(pooled)  # [K, 1]: softmax([c, 0])[0] = sigmoid(c)
        logits = torch.cat([confidence, torch.zeros_like(confidence)], -1)
        return {
            "pred_logits": logits.unsqueeze(1),
            "pred_boxes": boxes_cxcywh.unsqueeze(1),
            "aux_outputs": [],
        }

    def decode_bytes_per_pair(self, num_image_tokens: int) -> int:
        """The concatenated input and each fusion block's four activations, float32."""
        head = self.config.fusion
        width = 2 * head.embed_channels + head.map_channels + 4 * head.fusion_layers * head.fused_dim
        return width * num_image_tokens * 4


def build_model(config: ModelConfig) -> FusionModel:
    """Build the fusion model from its config, loading pretrained parts as the config asks: the
    CLIP image tower with the vision backbone (``vision.pretrained``), the text tower as
    ``config.text`` says."""
    from vgtool.models.text import build_text_encoder

    clip = None
    if config.fusion.clip_image is not None:
        from vgtool.models.clip import ClipImageTower

        clip = ClipImageTower(
            config.fusion.clip_image,
            pretrained=config.vision.pretrained,
            overrides=config.fusion.clip_overrides,
        )
    vision = FusionVision(VisionBackbone(config.vision), clip)
    return FusionModel(config, vision, build_text_encoder(config.text))
