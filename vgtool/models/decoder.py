"""The grounding decoder: object queries attend to each other, then to image and text memory.

Cross-attention keys and values are projected separately for the image memory (once per image) and
the text memory (once per phrase). So grounding P phrases in B images projects B image memories and
P text memories per layer, not B x P of each. Each query attends to its image's tokens and its
phrase's tokens under one softmax (:meth:`Attention.attend_pairs`); when the pairs are every phrase
in every image (image-major, as ``vgtool ground`` makes them), the queries of an image's phrases
are stacked against its memory instead of copying that memory per pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vgtool.box_ops import inverse_sigmoid
from vgtool.models.config import DecoderConfig


@dataclass
class PairMemory:
    """One layer's projected memories and the K (image, phrase) pairs that attend to them.

    Attributes:
        image_kv: projected image memory, two ``[B, H, N, D/H]`` (see :meth:`Attention.project_kv`).
        text_kv: projected text memory, two ``[P, H, T, D/H]``.
        text_valid: ``[P, T]`` bool, True for real tokens.
        image_index, text_index: ``[K]`` each pair's image and phrase; ``text_index`` is None when
            pair k is phrase k (K == P, as in training), so the text memory is used without a gather.
        grid: ``(B, P)`` when pair ``b * P + p`` is image b with phrase p (every phrase in every
            image, image-major; see :func:`pair_grid`): the memories are then used in place, not
            gathered per pair.
    """

    image_kv: tuple[torch.Tensor, torch.Tensor]
    text_kv: tuple[torch.Tensor, torch.Tensor]
    text_valid: torch.Tensor
    image_index: torch.Tensor
    text_index: torch.Tensor | None
    grid: tuple[int, int] | None


class Attention(nn.Module):
    """Multi-head attention with the key/value projection exposed, so it can be computed once."""

    def __init__(self, d_model: int, num_heads: int, dropout: float):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [N, L, D] -> [N, H, L, D/H]
        n, length, d = x.shape
        return x.view(n, length, self.num_heads, d // self.num_heads).transpose(1, 2)

    def project_kv(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, L, D]`` keys and values -> two ``[N, H, L, D/H]`` tensors."""
        return self._heads(self.k_proj(keys)), self._heads(self.v_proj(values))

    def attend(
        self, query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend ``[N, Lq, D]`` queries to projected ``k``/``v``.

        Args:
            mask: ``[N, 1, 1, Lk]`` bool, True where a key may be attended to, or a float
                ``[N, H, Lq, Lk]`` added to the attention logits.
        """
        n, length, d = query.shape
        q = self._heads(self.q_proj(query))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).reshape(n, length, d))

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        k, v = self.project_kv(key, value)
        return self.attend(query, k, v, mask)

    def attend_pairs(self, query: torch.Tensor, memory: PairMemory) -> torch.Tensor:
        """Attend each pair's ``[K, Q, D]`` queries to its image's and its phrase's memory under one
        softmax: the same result as :meth:`attend` on the concatenated memory ``[image tokens; text
        tokens]`` of each pair, without building that memory per pair."""
        (img_k, img_v), (txt_k, txt_v) = memory.image_kv, memory.text_kv
        image_index, text_index, grid = memory.image_index, memory.text_index, memory.grid
        n, length, d = query.shape
        q = self._heads(self.q_proj(query)) * (d // self.num_heads) ** -0.5  # [K, H, Q, dh]
        if grid is not None:
            b, p = grid
            s_img = _from_images(_to_images(q, b, p) @ img_k.transpose(-1, -2), b, p, length)  # [K, H, Q, N]
            s_txt = _from_phrases(
                _to_phrases(q, b, p) @ txt_k.transpose(-1, -2), b, p, length
            )  # [K, H, Q, T]
        else:
            s_img = q @ img_k.index_select(0, image_index).transpose(-1, -2)
            s_txt = q @ _rows(txt_k, text_index).transpose(-1, -2)
        s_txt = s_txt.masked_fill(~_rows(memory.text_valid, text_index)[:, None, None, :], float("-inf"))
        weights = torch.cat([s_img, s_txt], dim=-1).softmax(-1)  # image tokens: never all masked
        weights = F.dropout(weights, self.dropout, self.training)
        w_img, w_txt = weights.split([s_img.shape[-1], s_txt.shape[-1]], dim=-1)
        if grid is not None:
            out = _from_images(_to_images(w_img, b, p) @ img_v, b, p, length)
            out = out + _from_phrases(_to_phrases(w_txt, b, p) @ txt_v, b, p, length)
        else:
            out = w_img @ img_v.index_select(0, image_index) + w_txt @ _rows(txt_v, text_index)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, d))


def _rows(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """``x[index]`` along dim 0, or ``x`` itself when ``index`` is None (the identity).

    ``index_select`` rather than advanced indexing: its backward is an ``index_add_``, several times
    faster on CPU than the accumulating ``index_put_`` of ``x[index]``'s backward.
    """
    return x if index is None else x.index_select(0, index)


# Layout changes between pairs ([K = B * P, H, Q, X], image-major) and per-image ([B, H, P * Q, X])
# or per-phrase ([P, H, B * Q, X]) stacks of the same rows.
def _to_images(x: torch.Tensor, b: int, p: int) -> torch.Tensor:
    _, h, q, last = x.shape
    return x.view(b, p, h, q, last).transpose(1, 2).reshape(b, h, p * q, last)


def _from_images(x: torch.Tensor, b: int, p: int, q: int) -> torch.Tensor:
    _, h, _, last = x.shape
    return x.view(b, h, p, q, last).transpose(1, 2).reshape(b * p, h, q, last)


def _to_phrases(x: torch.Tensor, b: int, p: int) -> torch.Tensor:
    _, h, q, last = x.shape
    return x.view(b, p, h, q, last).permute(1, 2, 0, 3, 4).reshape(p, h, b * q, last)


def _from_phrases(x: torch.Tensor, b: int, p: int, q: int) -> torch.Tensor:
    _, h, _, last = x.shape
    return x.view(p, h, b, q, last).permute(2, 0, 1, 3, 4).reshape(b * p, h, q, last)


def pair_grid(image_index: torch.Tensor, text_index: torch.Tensor, num_images: int, num_texts: int):
    """``(B, P)`` when the pairs are every phrase in every image, image-major; else None."""
    if len(image_index) != num_images * num_texts:
        return None
    device = image_index.device
    expected_images = torch.arange(num_images, device=device).repeat_interleave(num_texts)
    expected_texts = torch.arange(num_texts, device=device).repeat(num_images)
    if torch.equal(image_index, expected_images) and torch.equal(text_index, expected_texts):
        return num_images, num_texts
    return None


def _is_identity(index: torch.Tensor, size: int) -> bool:
    """True when ``index`` is ``arange(size)``."""
    return len(index) == size and torch.equal(index, torch.arange(size, device=index.device))


class DecoderLayer(nn.Module):
    """Pre-norm layer: self-attention, cross-attention to memory, feed-forward."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        d = config.d_model
        self.self_attn = Attention(d, config.num_heads, config.dropout)
        self.cross_attn = Attention(d, config.num_heads, config.dropout)
        self.ffn = nn.Sequential(
            nn.Linear(d, config.ffn_dim), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(config.ffn_dim, d)
        )
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor, memory: PairMemory) -> torch.Tensor:
        """One layer.

        Args:
            tgt: ``[K, Q, D]`` query states.
            query_pos: ``[K, Q, D]`` query positions (from reference boxes) or ``[1, Q, D]`` learned ones.
            memory: this layer's projected memories and the pairs.

        Returns:
            ``[K, Q, D]`` query states.
        """
        x = self.norm1(tgt)
        qk = x + query_pos
        tgt = tgt + self.drop(self.self_attn(qk, qk, x))
        tgt = tgt + self.drop(self.cross_attn.attend_pairs(self.norm2(tgt) + query_pos, memory))
        return tgt + self.drop(self.ffn(self.norm3(tgt)))


class Decoder(nn.Module):
    """A stack of :class:`DecoderLayer` with a shared final norm applied to every layer's output."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.d_model)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor | None,
        image_keys: torch.Tensor,
        image_values: torch.Tensor,
        text_keys: torch.Tensor,
        text_values: torch.Tensor,
        text_valid: torch.Tensor,
        image_index: torch.Tensor,
        text_index: torch.Tensor,
        reference_boxes: torch.Tensor | None = None,
        ref_embed: nn.Module | None = None,
        box_delta: nn.Module | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decode K (image, phrase) pairs.

        Args:
            tgt: ``[K, Q, D]`` initial query states.
            query_pos: ``[1, Q, D]`` learned query positions (None with ``reference_boxes``).
            image_keys, image_values: ``[B, N, D]`` image memory (keys carry the positional encoding).
            text_keys, text_values: ``[P, T, D]`` text memory.
            text_valid: ``[P, T]`` bool, True for real tokens.
            image_index, text_index: ``[K]`` which image and which phrase each pair uses.
            reference_boxes: ``[K, Q, 4]`` cxcywh in [0, 1], for iterative box refinement: each layer's
                query positions are ``ref_embed(reference boxes)``, and after each layer the boxes
                become ``sigmoid(inverse_sigmoid(reference) + box_delta(state))`` (detached as the next
                layer's reference).

        Returns:
            ``[L, K, Q, D]`` normalised states after each of the L layers, and with
            ``reference_boxes`` the ``[L, K, Q, 4]`` refined cxcywh boxes of each layer (else None).
        """
        grid = pair_grid(image_index, text_index, image_keys.shape[0], text_keys.shape[0])
        pair_text_index = None if _is_identity(text_index, text_keys.shape[0]) else text_index
        states, boxes = [], []
        reference = reference_boxes
        for layer in self.layers:
            memory = PairMemory(
                image_kv=layer.cross_attn.project_kv(image_keys, image_values),  # 2 x [B, H, N, D/H]
                text_kv=layer.cross_attn.project_kv(text_keys, text_values),  # 2 x [P, H, T, D/H]
                text_valid=text_valid,
                image_index=image_index,
                text_index=pair_text_index,
                grid=grid,
            )
            if reference is not None:
                query_pos = ref_embed(reference)
            tgt = layer(tgt, query_pos, memory)
            state = self.norm(tgt)
            states.append(state)
            if reference is not None:
                refined = (inverse_sigmoid(reference) + box_delta(state)).sigmoid()
                boxes.append(refined)
                reference = refined.detach()
        return torch.stack(states), (torch.stack(boxes) if boxes else None)
