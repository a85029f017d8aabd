"""The grounding decoder: object queries attend to each other, then to image and text memory.

Cross-attention keys and values are projected separately for the image memory (once per image) and
the text memory (once per phrase), then gathered per (image, phrase) pair. So grounding P phrases in
B images projects B image memories and P text memories per layer, not B x P of each.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vgtool.box_ops import inverse_sigmoid
from vgtool.models.config import DecoderConfig


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
            mask: ``[N, 1, 1, Lk]`` bool, True where a key may be attended to.
        """
        n, length, d = query.shape
        q = self._heads(self.q_proj(query))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).reshape(n, length, d))

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        k, v = self.project_kv(key, value)
        return self.attend(query, k, v)


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

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        memory_k: torch.Tensor,
        memory_v: torch.Tensor,
        memory_mask: torch.Tensor,
    ) -> torch.Tensor:
        """One layer.

        Args:
            tgt: ``[K, Q, D]`` query states.
            query_pos: ``[K, Q, D]`` or ``[1, Q, D]`` learned query positions.
            memory_k, memory_v: ``[K, H, M, D/H]`` projected memory.
            memory_mask: ``[K, 1, 1, M]`` bool, True for valid memory tokens.
        """
        x = self.norm1(tgt)
        qk = x + query_pos
        tgt = tgt + self.drop(self.self_attn(qk, qk, x))
        tgt = tgt + self.drop(
            self.cross_attn.attend(self.norm2(tgt) + query_pos, memory_k, memory_v, memory_mask)
        )
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
        num_image_tokens = image_keys.shape[1]
        valid = torch.cat(
            [
                torch.ones(len(text_index), num_image_tokens, dtype=torch.bool, device=tgt.device),
                text_valid[text_index],
            ],
            dim=1,
        )[:, None, None, :]
        states, boxes = [], []
        reference = reference_boxes
        for layer in self.layers:
            img_k, img_v = layer.cross_attn.project_kv(image_keys, image_values)  # [B, H, N, D/H]
            txt_k, txt_v = layer.cross_attn.project_kv(text_keys, text_values)  # [P, H, T, D/H]
            memory_k = torch.cat([img_k[image_index], txt_k[text_index]], dim=2)
            memory_v = torch.cat([img_v[image_index], txt_v[text_index]], dim=2)
            if reference is not None:
                query_pos = ref_embed(reference)
            tgt = layer(tgt, query_pos, memory_k, memory_v, valid)
            state = self.norm(tgt)
            states.append(state)
            if reference is not None:
                refined = (inverse_sigmoid(reference) + box_delta(state)).sigmoid()
                boxes.append(refined)
                reference = refined.detach()
        return torch.stack(states), (torch.stack(boxes) if boxes else None)
