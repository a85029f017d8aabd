"""A small multi-layer perceptron with ReLU between its layers (DETR's box head, and others)."""

from __future__ import annotations

import itertools

import torch
from torch import nn


class MLP(nn.Module):
    """``num_layers`` linear layers, ``in_dim -> hidden -> ... -> out_dim``, on the last dimension."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., in_dim]`` -> ``[..., out_dim]``."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                # In place (a Linear's backward never needs its output): no second buffer of the
                # hidden size (for the proposals, [K, N, 2D]), which is measurably faster on CPU.
                x = x.relu_()
        return x
