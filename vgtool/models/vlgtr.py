"""VL-GTR: a DETR-style visual grounding model.

image -> vision backbone -> patch tokens -> projection [-> image encoder] (+2D sine position)  \
phrase -> text encoder -> token features -> projection (+type embedding)    -> memory
learned object queries (+ the pooled phrase as their content) -> decoder over memory
-> class head (object / no-object) and box head (cxcywh in [0, 1]) on every decoder layer.

With ``decoder.query_selection`` (two-stage), the queries are not blank: each image token proposes a
box and an object score for the phrase (``enc_outputs``), and the best ``num_queries`` proposals seed
the decoder, which refines their boxes layer by layer. The score comes either from tokens modulated
by the phrase (FiLM) and an MLP per (image, phrase) pair, or (``proposal_scoring: dot``) from a dot
product between the phrase and token features computed once per image.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from vgtool.box_ops import inverse_sigmoid
from vgtool.models.config import NO_OBJECT, OBJECT, ModelConfig
from vgtool.models.decoder import Decoder
from vgtool.models.encoder import ImageEncoder, PhraseEncoder
from vgtool.models.position import sine_box_embedding, sine_position_2d
from vgtool.models.text import TextEncoder
from vgtool.models.vision import VisionBackbone

__all__ = ["NO_OBJECT", "OBJECT", "VLGTR", "ImageMemory", "TextMemory", "build_model"]


@dataclass
class ImageMemory:
    """Encoded images, ready for any number of phrases.

    Attributes:
        tokens: ``[B, N, D]`` projected patch tokens (decoder values).
        keys: ``[B, N, D]`` tokens plus the 2D positional encoding (decoder keys).
        grid: ``(h, w)`` of the token grid, ``N = h * w``.
    """

    tokens: torch.Tensor
    keys: torch.Tensor
    grid: tuple[int, int] = (0, 0)


@dataclass
class TextMemory:
    """Encoded phrases, ready for any number of images.

    Attributes:
        tokens: ``[P, T, D]`` projected token features (decoder values).
        keys: ``[P, T, D]`` tokens plus the text type embedding (decoder keys).
        valid: ``[P, T]`` bool, True for real tokens.
        pooled: ``[P, D]`` mean of the valid tokens, the phrase's query content.
    """

    tokens: torch.Tensor
    keys: torch.Tensor
    valid: torch.Tensor
    pooled: torch.Tensor


class MLP(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                # In place (a Linear's backward never needs its output): no second buffer of the
                # hidden size (for the proposals, [K, N, 2D]), which is measurably faster on CPU.
                x = x.relu_()
        return x


class BoxPositionEmbedding(nn.Module):
    """``[..., 4]`` cxcywh reference boxes -> ``[..., D]`` query positions (sine embedding + MLP)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.mlp = MLP(d_model, d_model, d_model, 2)

    def forward(self, boxes_cxcywh: torch.Tensor) -> torch.Tensor:
        return self.mlp(sine_box_embedding(boxes_cxcywh, self.mlp.layers[0].in_features))


class TokenProposals(nn.Module):
    """First stage of two-stage decoding: image tokens propose boxes and are scored against phrases.

    ``scoring="film"``: the phrase modulates every token of each pair (:meth:`forward`), an MLP and a
    class head score it. ``scoring="dot"``: the MLP runs once per image (:meth:`image_features`), a
    token's score is a dot product with the projected phrase (:meth:`dot_scores`), and only the
    chosen tokens are modulated (:meth:`modulate`). Each token's box starts as a
    ``initial_size``-sided box centred on its grid cell and is moved by the box MLP in logit space.
    """

    def __init__(self, d_model: int, initial_size: float = 0.15, scoring: Literal["film", "dot"] = "film"):
        super().__init__()
        self.scoring = scoring
        self.film = nn.Linear(d_model, 2 * d_model)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.norm = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, 2 * d_model, d_model, 2)
        self.mlp_norm = nn.LayerNorm(d_model)
        if scoring == "dot":
            self.score_proj = nn.Linear(d_model, d_model)
            self.score_bias = nn.Parameter(torch.zeros(()))
        else:
            self.class_head = nn.Linear(d_model, 2)
        self.box_head = MLP(d_model, d_model, 4, 3)
        self.initial_size = initial_size

    def forward(self, tokens: torch.Tensor, phrase: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Modulate and score every token of every pair.

        Args:
            tokens: ``[K, N, D]`` image tokens of each pair's image, ``N = h * w`` in row-major order.
            phrase: ``[K, D]`` each pair's phrase vector.

        Returns:
            ``[K, N, D]`` modulated token features and their ``[K, N, 2]`` (object, no-object) logits.
        """
        scale, shift = self.film(phrase).unsqueeze(1).chunk(2, dim=-1)  # [K, 1, D] each
        features = self.norm(torch.addcmul(shift, tokens, 1 + scale))  # tokens * (1 + scale) + shift
        features = self.mlp_norm(self.mlp(features).add_(features))  # in place, as in MLP
        return features, self.class_head(features)

    def image_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """``scoring="dot"``: ``[B, N, D]`` image tokens -> ``[B, N, D]`` proposal features, once per image."""
        features = self.norm(tokens)
        return self.mlp_norm(self.mlp(features).add_(features))

    def dot_scores(
        self,
        features: torch.Tensor,
        phrase: torch.Tensor,
        image_index: torch.Tensor,
        text_index: torch.Tensor,
    ) -> torch.Tensor:
        """``scoring="dot"``: every token's (object, no-object) logits for every pair.

        Args:
            features: ``[B, N, D]`` from :meth:`image_features`.
            phrase: ``[P, D]`` phrase vectors.
            image_index, text_index: ``[K]`` each pair's image and phrase.

        Returns:
            ``[K, N, 2]``: the object logit is ``<features, score_proj(phrase)> / sqrt(D) + bias``, the
            no-object logit 0 (a two-class softmax of these is a sigmoid of the object logit).
        """
        num_images, num_tokens, d = features.shape
        query = self.score_proj(phrase) * d**-0.5  # [P, D]
        scores = torch.einsum("pd,bnd->pbn", query, features).reshape(-1, num_tokens)  # [P * B, N]
        scores = scores.index_select(0, text_index * num_images + image_index) + self.score_bias  # [K, N]
        return torch.stack([scores, torch.zeros_like(scores)], dim=-1)

    def modulate(self, features: torch.Tensor, phrase: torch.Tensor) -> torch.Tensor:
        """``scoring="dot"``: FiLM ``[K, M, D]`` chosen features by their pair's ``[K, D]`` phrase."""
        scale, shift = self.film(phrase).unsqueeze(1).chunk(2, dim=-1)  # [K, 1, D] each
        return torch.addcmul(shift, features, 1 + scale)

    def boxes(
        self, features: torch.Tensor, grid: tuple[int, int], token_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Proposed boxes of the tokens.

        Args:
            features: ``[K, M, D]`` modulated features of M tokens per pair (all N, or those picked).
            grid: ``(h, w)`` of the full token grid.
            token_index: ``[K, M]`` which grid token each row is; None means all N in order.

        Returns:
            ``[K, M, 4]`` cxcywh in [0, 1].
        """
        height, width = grid
        ys = (torch.arange(height, device=features.device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=features.device, dtype=torch.float32) + 0.5) / width
        centres = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)  # [N, (cx, cy)]
        anchors = torch.cat([centres, torch.full_like(centres, self.initial_size)], dim=-1)  # [N, 4]
        anchors = inverse_sigmoid(anchors).to(features.dtype)
        anchors = anchors.expand(features.shape[0], -1, -1) if token_index is None else anchors[token_index]
        return (anchors + self.box_head(features)).sigmoid()


class VLGTR(nn.Module):
    """The grounding model. See the module docstring for the data flow."""

    def __init__(self, config: ModelConfig, vision: VisionBackbone, text: TextEncoder):
        super().__init__()
        if config.decoder.relation_bias and not config.decoder.query_selection:
            raise ValueError(
                "decoder.relation_bias needs decoder.query_selection: the bias comes from the queries' boxes"
            )
        d = config.decoder.d_model
        self.config = config
        self.vision = vision
        self.text = text
        self.image_proj = nn.Sequential(nn.Linear(vision.embed_dim, d), nn.LayerNorm(d))
        self.encoder = ImageEncoder(d, config.encoder) if config.encoder.num_layers else None
        self.text_proj = nn.Sequential(nn.Linear(text.embed_dim, d), nn.LayerNorm(d))
        self.text_type = nn.Parameter(torch.zeros(d))
        self.phrase_proj = nn.Linear(d, d)
        self.query_pos = nn.Embedding(config.decoder.num_queries, d)
        self.decoder = Decoder(config.decoder)
        self.class_head = nn.Linear(d, 2)
        self.box_head = MLP(d, d, 4, 3)
        self.phrase_encoder = (
            PhraseEncoder(d, config.phrase_encoder) if config.phrase_encoder.num_layers else None
        )
        if config.decoder.query_selection:
            self.proposals = TokenProposals(d, scoring=config.decoder.proposal_scoring)
            self.query_content = nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d))
            self.ref_embed = BoxPositionEmbedding(d)
            nn.init.zeros_(self.box_head.layers[-1].weight)  # refinement starts at the proposals
            nn.init.zeros_(self.box_head.layers[-1].bias)
        self.category_head: nn.Linear | None = None  # training only, see add_category_head
        if config.categories:
            self.add_category_head(config.categories)
        self.channels_last = False  # see use_channels_last
        self.set_frozen(vision=config.vision.frozen, text=config.text.frozen)

    # ---- freezing -------------------------------------------------------------------------------
    def set_frozen(self, *, vision: bool, text: bool) -> None:
        """Freeze or unfreeze the backbones (frozen parts also stay in eval mode)."""
        self.vision_frozen, self.text_frozen = vision, text
        self.vision.requires_grad_(not vision)
        self.text.requires_grad_(not text)
        self.train(self.training)

    def train(self, mode: bool = True) -> VLGTR:
        super().train(mode)
        if getattr(self, "vision_frozen", False):
            self.vision.eval()
        if getattr(self, "text_frozen", False):
            self.text.eval()
        return self

    def add_category_head(self, categories: tuple[str, ...]) -> None:
        """Give the model a (new) auxiliary category head over ``categories``: used in training only,
        it names the category of the image token under each target's centre (see
        ``ModelConfig.categories`` and ``loss.category_weight``)."""
        head = nn.Linear(self.config.decoder.d_model, len(categories))
        self.category_head = head.to(self.class_head.weight.device)
        self.config = replace(self.config, categories=tuple(categories))

    def use_channels_last(self) -> None:
        """Keep the vision backbone's weights channels-last and feed it channels-last images, whoever
        calls :meth:`encode_image_features` (faster where
        :func:`vgtool.models.inference.prefers_channels_last` says so)."""
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

    def project_image(self, features: torch.Tensor) -> ImageMemory:
        """``[B, C, h, w]`` backbone features -> :class:`ImageMemory` (through the image encoder, if any)."""
        _, _, height, width = features.shape
        tokens = self.image_proj(features.flatten(2).transpose(1, 2))  # [B, h*w, D]
        pos = sine_position_2d(height, width, tokens.shape[-1], device=tokens.device, dtype=tokens.dtype)
        if self.encoder is not None:
            tokens = self.encoder(tokens, pos)
        return ImageMemory(tokens=tokens, keys=tokens + pos, grid=(height, width))

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

    def project_text(self, features: torch.Tensor, attention_mask: torch.Tensor) -> TextMemory:
        """``[P, T, C]`` encoder features and ``[P, T]`` mask -> :class:`TextMemory`."""
        tokens = self.text_proj(features)  # [P, T, D]
        valid = attention_mask.bool()
        if self.phrase_encoder is not None:
            tokens = self.phrase_encoder(tokens, valid)
        weights = valid.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)
        return TextMemory(tokens=tokens, keys=tokens + self.text_type, valid=valid, pooled=pooled)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextMemory:
        """Encode tokenised phrases (``[P, T]`` ids and mask)."""
        return self.project_text(self.encode_text_features(input_ids, attention_mask), attention_mask)

    # ---- decoding -------------------------------------------------------------------------------
    def decode(
        self,
        image: ImageMemory,
        text: TextMemory,
        image_index: torch.Tensor | None = None,
        text_index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | list[dict[str, torch.Tensor]]]:
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
        if image_index is None:
            if image.tokens.shape[0] != text.tokens.shape[0]:
                raise ValueError(
                    f"{image.tokens.shape[0]} images and {text.tokens.shape[0]} phrases: pass image_index/text_index"
                )
            image_index = torch.arange(image.tokens.shape[0], device=image.tokens.device)
        if text_index is None:
            text_index = image_index
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
    ) -> dict[str, torch.Tensor | list[dict[str, torch.Tensor]]]:
        """Two-stage decoding (``decoder.query_selection``); same outputs as :meth:`decode`, plus in
        training mode ``enc_outputs``, every token's proposal (``[K, N, 2]`` logits, ``[K, N, 4]``
        boxes) for the loss."""
        if self.proposals.scoring == "dot":
            chosen, enc_logits, reference, enc_boxes = self._propose_dot(image, text, image_index, text_index)
        else:
            chosen, enc_logits, reference, enc_boxes = self._propose_film(
                image, text, image_index, text_index
            )
        tgt = self.query_content(chosen) + self.query_pos.weight[: chosen.shape[1]].unsqueeze(0)
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
            reference_boxes=reference,
            ref_embed=self.ref_embed,
            box_delta=self.box_head,
        )  # [L, K, Q, D], [L, K, Q, 4]
        out = _outputs(self.class_head(states), boxes)
        if enc_boxes is not None:
            out["enc_outputs"] = {"pred_logits": enc_logits, "pred_boxes": enc_boxes}
        return out

    def _propose_film(
        self, image: ImageMemory, text: TextMemory, image_index: torch.Tensor, text_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """First stage with ``proposal_scoring: film``: every token of every pair is modulated.

        Returns:
            The chosen queries' ``[K, Q, D]`` features and ``[K, Q, 4]`` reference boxes (cxcywh,
            detached), every token's ``[K, N, 2]`` logits, and in training every token's ``[K, N, 4]``
            boxes (else None).
        """
        # index_select, not x[index]: a several times faster backward on CPU (see decoder._rows)
        phrase = self.phrase_proj(text.pooled).index_select(0, text_index)  # [K, D]
        tokens = image.keys.index_select(0, image_index)  # [K, N, D]
        features, enc_logits = self.proposals(tokens, phrase)  # [K, N, D], [K, N, 2]
        top = _top_tokens(enc_logits, self.query_pos.num_embeddings)  # [K, Q]
        chosen = features.gather(1, top.unsqueeze(-1).expand(-1, -1, features.shape[-1]))  # [K, Q, D]
        if self.training:  # every token's box is supervised
            enc_boxes = self.proposals.boxes(features, image.grid)  # [K, N, 4]
            reference = enc_boxes.gather(1, top.unsqueeze(-1).expand(-1, -1, 4)).detach()  # [K, Q, 4]
            return chosen, enc_logits, reference, enc_boxes
        # only the chosen tokens' boxes are needed
        return chosen, enc_logits, self.proposals.boxes(chosen, image.grid, top), None

    def _propose_dot(
        self, image: ImageMemory, text: TextMemory, image_index: torch.Tensor, text_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """First stage with ``proposal_scoring: dot``: features and boxes once per image, a dot product
        per (token, pair), and only the chosen tokens modulated by the phrase. Returns as
        :meth:`_propose_film`."""
        phrase = self.phrase_proj(text.pooled)  # [P, D]
        features = self.proposals.image_features(image.keys)  # [B, N, D]
        num_tokens, d = features.shape[1:]
        enc_logits = self.proposals.dot_scores(features, phrase, image_index, text_index)  # [K, N, 2]
        top = _top_tokens(enc_logits, self.query_pos.num_embeddings)  # [K, Q]
        rows = (image_index.unsqueeze(1) * num_tokens + top).flatten()  # [K * Q] rows of [B * N]
        picked = features.reshape(-1, d).index_select(0, rows).view(*top.shape, d)  # [K, Q, D]
        chosen = self.proposals.modulate(picked, phrase.index_select(0, text_index))
        if self.training:  # every token's box is supervised: computed per image, used per pair
            enc_boxes = self.proposals.boxes(features, image.grid).index_select(0, image_index)  # [K, N, 4]
            reference = enc_boxes.gather(1, top.unsqueeze(-1).expand(-1, -1, 4)).detach()  # [K, Q, 4]
            return chosen, enc_logits, reference, enc_boxes
        return chosen, enc_logits, self.proposals.boxes(picked, image.grid, top), None

    def forward(
        self,
        pixel_values: torch.Tensor | None,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        *,
        image_features: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None,
        image_index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | list[dict[str, torch.Tensor]]]:
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
            See :meth:`decode`; in training mode, with a category head (``config.categories``), also
            ``category_outputs``: ``logits`` ``[M, h*w, C]`` per image token (row-major over the
            ``grid`` ``(h, w)``) and the pairs' ``image_index`` ``[B]``.
        """
        if image_features is None:
            image_features = self.encode_image_features(pixel_values)
        if text_features is None:
            text_features = self.encode_text_features(input_ids, attention_mask)
        text_index = None
        if image_index is not None:
            text_index = torch.arange(attention_mask.shape[0], device=attention_mask.device)
        image = self.project_image(image_features)
        out = self.decode(image, self.project_text(text_features, attention_mask), image_index, text_index)
        if self.training and self.category_head is not None:
            if image_index is None:
                image_index = torch.arange(image.tokens.shape[0], device=image.tokens.device)
            out["category_outputs"] = {
                "logits": self.category_head(image.tokens),
                "grid": image.grid,
                "image_index": image_index,
            }
        return out


def _top_tokens(logits: torch.Tensor, num_queries: int) -> torch.Tensor:
    """``[K, N, 2]`` (object, no-object) logits -> ``[K, Q]`` indices of the Q best-scoring tokens."""
    score = logits[..., OBJECT] - logits[..., NO_OBJECT]
    return score.topk(min(num_queries, score.shape[1]), dim=1).indices


def _outputs(
    logits: torch.Tensor, boxes: torch.Tensor
) -> dict[str, torch.Tensor | list[dict[str, torch.Tensor]]]:
    """``[L, K, Q, 2]`` logits and ``[L, K, Q, 4]`` boxes of every layer -> the output dict."""
    aux = [{"pred_logits": lg, "pred_boxes": bx} for lg, bx in zip(logits[:-1], boxes[:-1], strict=True)]
    return {"pred_logits": logits[-1], "pred_boxes": boxes[-1], "aux_outputs": aux}


def build_model(config: ModelConfig) -> VLGTR:
    """Build VL-GTR from its config, loading pretrained parts as the config asks."""
    return VLGTR(config, VisionBackbone(config.vision), TextEncoder(config.text))
