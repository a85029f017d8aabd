"""Trace-friendly stand-ins for the parts of transformers' Grounding DINO (and MM-Grounding-DINO) and
Swin code that a TorchScript trace would freeze to the traced image and caption.

A trace records tensor operations; Python decisions on sizes (``if width % 4 != 0``), sizes turned
into constants (``torch.as_tensor(list_of_sizes)``) and step counts (``torch.linspace(.., steps=h)``)
are replayed as they were at trace time. Grounding DINO takes images of any size (its processor keeps
the aspect ratio) and captions of any length, so each such spot is replaced while the model is
traced (:func:`traceable`), with code that computes the same numbers from traced sizes:

- the text self-attention mask between delimiter tokens: ``torch.isin``, ``cummax``/``cummin`` and
  a boolean ``eye`` (no ONNX export, or no onnxruntime kernel) become comparisons and reductions
  over a ``[B, L, L]`` grid (integers: exact);
- the encoder's reference points and the two-stage proposals: their unit-step ``linspace`` grids
  of pixel centres become ``arange`` (the same floats);
- multi-scale deformable attention: its ``spatial_shapes`` tensor is rebuilt from the traced sizes;
- Swin: the padding of the patch embedding and of patch merging, and the crop after window
  attention, always run (padding by zero and cropping to the full size do nothing).

Nothing changes in the installed transformers; everything is restored on leaving the context. The
export checks the graph against the unpatched model on other sizes than the traced ones.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

# transformers class of the model -> prefix of its modeling module's class names
PREFIXES = {
    "GroundingDinoForObjectDetection": "GroundingDino",
    "MMGroundingDinoForObjectDetection": "MMGroundingDino",
}


@contextmanager
def traceable(model: nn.Module) -> Iterator[None]:
    """Within the block, ``model`` (a Grounding DINO or MM-Grounding-DINO detector) traces into a
    graph that holds for every image size, batch size and caption length."""
    prefix = PREFIXES[type(model).__name__]
    modeling = sys.modules[type(model).__module__]
    from transformers.models.swin import modeling_swin

    encoder = getattr(modeling, f"{prefix}Encoder")
    base = getattr(modeling, f"{prefix}Model")
    attention = getattr(modeling, f"{prefix}MultiscaleDeformableAttention")
    reference_points = encoder.__dict__["get_reference_points"]  # a staticmethod
    with ExitStack() as stack:
        for owner, name, value in (
            (modeling, "generate_masks_with_special_tokens_and_transfer_map", text_masks),
            (encoder, "get_reference_points", staticmethod(_unit_step_grids(reference_points.__func__))),
            (
                base,
                "generate_encoder_output_proposals",
                _unit_step_grids(base.generate_encoder_output_proposals),
            ),
            (attention, "forward", _traced_spatial_shapes(attention.forward)),
            (modeling_swin.SwinPatchEmbeddings, "maybe_pad", _pad_to_patches),
            (modeling_swin.SwinPatchMerging, "maybe_pad", _pad_to_even),
            (modeling_swin.SwinLayer, "forward", _swin_layer_forward),
        ):
            stack.enter_context(_swapped(owner, name, value))
        yield


@contextmanager
def _swapped(owner: Any, name: str, value: Any) -> Iterator[None]:
    """``owner.name = value`` for the block (the original, as stored on ``owner``, put back)."""
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def text_masks(input_ids: torch.Tensor, special_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' ``generate_masks_with_special_tokens_and_transfer_map``, traceably.

    Args:
        input_ids: ``[B, L]`` token ids.
        special_tokens: ``[S]`` ids of the delimiter tokens.

    Returns:
        ``attention_mask`` ``[B, L, L]`` bool (tokens attend within their phrase, and to themselves)
        and ``position_ids`` ``[B, L]`` (each token's distance from the delimiter before it).
    """
    seq_len = input_ids.shape[1]
    special = (input_ids[..., None] == special_tokens.to(input_ids.dtype)).any(-1)  # [B, L]
    indices = torch.arange(seq_len, device=input_ids.device)  # [L]
    earlier = indices[None, :] < indices[:, None]  # [L, L]: j < i
    from_here = indices[None, :] >= indices[:, None]  # [L, L]: j >= i
    # the last delimiter strictly before each token (-1: none), the first at or after it (L: none)
    previous = torch.where(special[:, None, :] & earlier, indices, -1).amax(-1)  # [B, L]
    following = torch.where(special[:, None, :] & from_here, indices, seq_len).amin(-1)  # [B, L]
    valid = (following != 0) & (following != seq_len - 1) & (following != seq_len)
    same_block = (following[:, :, None] == following[:, None, :]) & valid[:, None, :]  # [B, L, L]
    attention_mask = (indices[:, None] == indices[None, :])[None] | same_block
    position_ids = torch.where(valid, indices[None] - previous - 1, torch.zeros_like(previous))
    return attention_mask, position_ids.clamp(min=0).to(torch.long)


def _unit_step_linspace(
    start: float, end: Any, steps: Any, *, dtype: torch.dtype | None = None, device: Any = None
) -> torch.Tensor:
    """``torch.linspace(start, end, steps)`` where ``end - start == steps - 1``: ``arange`` keeps
    ``steps`` a traced size (and gives the same floats)."""
    return torch.arange(steps, dtype=dtype, device=device) + start


def _unit_step_grids(method: Callable) -> Callable:
    """``method`` with ``torch.linspace`` standing for :func:`_unit_step_linspace` while it runs
    (the reference points and proposals only build grids of pixel centres with it)."""

    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with _swapped(torch, "linspace", _unit_step_linspace):
            return method(*args, **kwargs)

    return wrapped


def _traced_spatial_shapes(forward: Callable) -> Callable:
    """The deformable attention's ``forward`` with ``spatial_shapes`` ``[levels, 2]`` rebuilt from
    ``spatial_shapes_list`` (the model builds it with ``torch.as_tensor``, a constant in a trace)."""

    @functools.wraps(forward)
    def wrapped(self: nn.Module, *args: Any, spatial_shapes_list: Any = None, **kwargs: Any) -> Any:
        kwargs["spatial_shapes"] = torch.stack(
            [torch.stack([torch.as_tensor(h), torch.as_tensor(w)]) for h, w in spatial_shapes_list]
        ).to(torch.long)
        return forward(self, *args, spatial_shapes_list=spatial_shapes_list, **kwargs)

    return wrapped


def _pad_to_patches(self: nn.Module, pixel_values: torch.Tensor, height: Any, width: Any) -> torch.Tensor:
    """``SwinPatchEmbeddings.maybe_pad``: pad right and bottom to whole patches, always."""
    pad_width = (self.patch_size[1] - width % self.patch_size[1]) % self.patch_size[1]
    pad_height = (self.patch_size[0] - height % self.patch_size[0]) % self.patch_size[0]
    return nn.functional.pad(pixel_values, (0, pad_width, 0, pad_height))


def _pad_to_even(self: nn.Module, input_feature: torch.Tensor, height: Any, width: Any) -> torch.Tensor:
    """``SwinPatchMerging.maybe_pad``: pad ``[B, H, W, C]`` to even sides, always."""
    return nn.functional.pad(input_feature, (0, 0, 0, width % 2, 0, height % 2))


def _swin_layer_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    input_dimensions: tuple[Any, Any],
    always_partition: bool = False,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``SwinLayer.forward`` (transformers 5), cropping the window padding away always."""
    from transformers.models.swin.modeling_swin import window_partition, window_reverse

    if not always_partition:
        self.set_shift_and_window_size(input_dimensions)
    height, width = input_dimensions
    batch_size, _, channels = hidden_states.size()
    shortcut = hidden_states
    hidden_states = self.layernorm_before(hidden_states).view(batch_size, height, width, channels)
    hidden_states, _ = self.maybe_pad(hidden_states, height, width)
    _, height_pad, width_pad, _ = hidden_states.shape
    windows = window_partition(self.cyclic_shift(hidden_states), self.window_size)
    windows = windows.view(-1, self.window_size * self.window_size, channels)
    attn_mask = self.get_attn_mask(height_pad, width_pad, dtype=hidden_states.dtype, device=windows.device)
    attention_output, attn_weights = self.attention(windows, attn_mask, **kwargs)
    attention_output = self.dropout(attention_output)
    attention_windows = attention_output.view(-1, self.window_size, self.window_size, channels)
    attention_windows = self.cyclic_shift(
        window_reverse(attention_windows, self.window_size, height_pad, width_pad), reverse=True
    )
    attention_windows = attention_windows[:, :height, :width, :].contiguous()
    attention_windows = attention_windows.view(batch_size, height * width, channels)
    hidden_states = shortcut + self.drop_path(attention_windows)
    residual = hidden_states
    hidden_states = self.mlp(self.layernorm_after(hidden_states))
    return self.dropout(hidden_states) + residual, attn_weights
