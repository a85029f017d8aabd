"""VL-GTR: a DETR-style visual grounding model.

image  -> vision backbone -> patch tokens   -> projection (+2D sine position) = ImageMemory
phrase -> text encoder    -> token features -> projection (+type embedding)   = TextMemory
each (image, phrase) pair: object queries (the pooled phrase as content) -> decoder over both memories
-> class head (object / no-object) and box head (cxcywh in [0, 1]) on every decoder layer.

With ``decoder.query_selection`` (two-stage), the queries are not blank: every image token,
modulated by the phrase, proposes a box and an object score (``enc_outputs``, see
:mod:`vgtool.models.proposals`); the best ``num_queries`` proposals seed the decoder, which refines
their boxes layer by layer.
"""

from __future__ import annotations

import torch
from torch import nn

from vgtool.models.base import GroundingModel, Outputs, pair_indices
from vgtool.models.config import NO_OBJECT, OBJECT, ModelConfig
from vgtool.models.decoder import Decoder
from vgtool.models.memory import ImageMemory, TextMemory
from vgtool.models.mlp import MLP
from vgtool.models.position import BoxPositionEmbedding, sine_position_2d
from vgtool.models.proposals import TokenProposals
from vgtool.models.text import TextEncoder
from vgtool.models.vision import VisionBackbone

__all__ = ["NO_OBJECT", "OBJECT", "VLGTR", "ImageMemory", "TextMemory", "build_model"]


class VLGTR(GroundingModel):
    """The grounding model. See the module docstring for the data flow; the encoders, freezing and
    ``forward`` are :class:`~vgtool.models.base.GroundingModel`'s."""

    head_parts = "projections, proposals, queries, decoder, heads"

    def __init__(self, config: ModelConfig, vision: VisionBackbone, text: TextEncoder):
        super().__init__(config, vision, text)
        d = config.decoder.d_model
        self.image_proj = nn.Sequential(nn.Linear(vision.embed_dim, d), nn.LayerNorm(d))
        self.text_proj = nn.Sequential(nn.Linear(text.embed_dim, d), nn.LayerNorm(d))
        self.text_type = nn.Parameter(torch.zeros(d))
        self.phrase_proj = nn.Linear(d, d)
        self.query_pos = nn.Embedding(config.decoder.num_queries, d)
        self.decoder = Decoder(config.decoder)
        self.class_head = nn.Linear(d, 2)
        self.box_head = MLP(d, d, 4, 3)
        if config.decoder.query_selection:
            self.proposals = TokenProposals(d)
            self.query_content = nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d))
            self.ref_embed = BoxPositionEmbedding(d)
            nn.init.zeros_(self.box_head.layers[-1].weight)  # refinement starts at the proposals
            nn.init.zeros_(self.box_head.layers[-1].bias)

    # ---- projections ----------------------------------------------------------------------------
    def project_image(self, features: torch.Tensor) -> ImageMemory:
        """``[B, C, h, w]`` backbone features -> :class:`ImageMemory`."""
        _, _, height, width = features.shape
        tokens = self.image_proj(features.flatten(2).transpose(1, 2))  # [B, h*w, D]
        pos = sine_position_2d(height, width, tokens.shape[-1], device=tokens.device, dtype=tokens.dtype)
        return ImageMemory(tokens=tokens, keys=tokens + pos, grid=(height, width))

    def project_text(self, features: torch.Tensor, attention_mask: torch.Tensor) -> TextMemory:
        """``[P, T, C]`` encoder features and ``[P, T]`` mask -> :class:`TextMemory`."""
        tokens = self.text_proj(features)  # [P, T, D]
        valid = attention_mask.bool()
        weights = valid.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)
        return TextMemory(tokens=tokens, keys=tokens + self.text_type, valid=valid, pooled=pooled)

    # ---- decoding -------------------------------------------------------------------------------
    def decode(
        self,
        image: ImageMemory,
        text: TextMemory,
        image_index: torch.Tensor | None = None,
        text_index: torch.Tensor | None = None,
    ) -> Outputs:
        """Ground K (image, phrase) pairs.

        Args:
            image: B encoded images.
            text: P encoded phrases.
            image_index, text_index: ``[K]`` the image and phrase of each pair; both default to
                ``arange(B)`` (pair i = image i with phrase i, which needs B == P).

        Returns:
            ``pred_logits``: ``[K, Q, 2]`` logits of (object, no-object).
            ``pred_boxes``: ``[K, Q, 4]`` cxcywh, normalised to [0, 1] of the image.
            ``aux_outputs``: one dict with those two keys per earlier decoder layer.
        """
        image_index, text_index = pair_indices(image, text, image_index, text_index)
        if self.config.decoder.query_selection:
            return self._decode_selected(image, text, image_index, text_index)
        num_queries = self.query_pos.num_embeddings
        query_pos = self.query_pos.weight.unsqueeze(0)  # [1, Q, D]
        tgt = (
            self.phrase_proj(text.pooled).index_select(0, text_index).unsqueeze(1).expand(-1, num_queries, -1)
        )
        states, _ = self.decoder(
            tgt.contiguous(),
            query_pos,
            image.keys,
            image.tokens,
            text.keys,
            text.tokens,
            text.valid,
            image_index,
            text_index,
        )  # [L, K, Q, D]
        logits = self.class_head(states)
        boxes = self.box_head(states).sigmoid()
        return _outputs(logits, boxes)

    def _decode_selected(
        self, image: ImageMemory, text: TextMemory, image_index: torch.Tensor, text_index: torch.Tensor
    ) -> Outputs:
        """Two-stage decoding (``decoder.query_selection``); same outputs as :meth:`decode`, plus in
        training mode ``enc_outputs``, every token's proposal (``[K, N, 2]`` logits, ``[K, N, 4]``
        boxes) for the loss."""
        # index_select, not x[index]: a several times faster backward on CPU (see decoder._rows)
        phrase = self.phrase_proj(text.pooled).index_select(0, text_index)  # [K, D]
        tokens = image.keys.index_select(0, image_index)  # [K, N, D]
        chosen = self.proposals.select(tokens, phrase, image.grid, self.query_pos.num_embeddings)
        features = chosen.features  # [K, Q, D]
        tgt = self.query_content(features) + self.query_pos.weight[: features.shape[1]].unsqueeze(0)
        states, boxes = self.decoder(
            tgt,
            None,
            image.keys,
            image.keys,  # values keep the position too, so queries can compare where things are
            text.keys,
            text.tokens,
            text.valid,
            image_index,
            text_index,
            reference_boxes=chosen.reference_boxes,
            ref_embed=self.ref_embed,
            box_delta=self.box_head,
        )  # [L, K, Q, D], [L, K, Q, 4]
        out = _outputs(self.class_head(states), boxes)
        if chosen.token_boxes is not None:
            out["enc_outputs"] = {"pred_logits": chosen.token_logits, "pred_boxes": chosen.token_boxes}
        return out

    def decode_bytes_per_pair(self, num_image_tokens: int) -> int:
        """The proposal features over every token and the queries' states."""
        decoder = self.config.decoder
        return 8 * num_image_tokens * decoder.d_model * 4 + 4 * decoder.num_queries * decoder.ffn_dim * 4


def _outputs(logits: torch.Tensor, boxes: torch.Tensor) -> Outputs:
    """``[L, K, Q, 2]`` logits and ``[L, K, Q, 4]`` boxes of every layer -> the output dict."""
    aux = [{"pred_logits": lg, "pred_boxes": bx} for lg, bx in zip(logits[:-1], boxes[:-1], strict=True)]
    return {"pred_logits": logits[-1], "pred_boxes": boxes[-1], "aux_outputs": aux}


def build_model(config: ModelConfig) -> VLGTR:
    """Build VL-GTR from its config, loading pretrained parts as the config asks."""
    return VLGTR(config, VisionBackbone(config.vision), TextEncoder(config.text))
