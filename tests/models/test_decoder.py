"""Pair attention: one softmax over a pair's image and phrase memory, without per-pair copies."""

from __future__ import annotations

import pytest
import torch

from vgtool.models.decoder import Attention, PairMemory, pair_grid

B, P, N, T, Q, D, H = 3, 4, 7, 5, 6, 16, 4


def _setup(seed=0):
    torch.manual_seed(seed)
    attention = Attention(D, H, dropout=0.0).eval()
    image_memory, text_memory = torch.randn(B, N, D), torch.randn(P, T, D)
    text_valid = torch.ones(P, T, dtype=torch.bool)
    text_valid[1, 3:] = False  # padded phrases
    text_valid[3, 1:] = False
    return attention, image_memory, text_memory, text_valid


def _reference(attention, query, image_memory, text_memory, text_valid, image_index, text_index):
    """Plain attention over each pair's concatenated memory [image tokens; text tokens]."""
    memory = torch.cat([image_memory[image_index], text_memory[text_index]], dim=1)
    k, v = attention.project_kv(memory, memory)
    mask = torch.cat([torch.ones(len(image_index), N, dtype=torch.bool), text_valid[text_index]], dim=1)
    return attention.attend(query, k, v, mask[:, None, None, :])


@pytest.mark.parametrize("layout", ["grid", "any", "phrase-per-pair"])
def test_pair_attention_equals_attention_over_concatenated_memory(layout):
    attention, image_memory, text_memory, text_valid = _setup()
    if layout == "grid":  # every phrase in every image, image-major (what vgtool ground decodes)
        image_index = torch.arange(B).repeat_interleave(P)
        text_index = torch.arange(P).repeat(B)
    elif layout == "any":  # any pairs, images shared unevenly
        image_index = torch.tensor([0, 0, 2, 1, 2, 2, 0])
        text_index = torch.tensor([1, 3, 0, 3, 2, 1, 0])
    else:  # training batches: pair k is phrase k (text_index None in PairMemory: no gather)
        image_index = torch.tensor([0, 2, 2, 1])
        text_index = torch.arange(P)
    grid = pair_grid(image_index, text_index, B, P)
    assert (grid == (B, P)) == (layout == "grid")
    memory_text_index = None if layout == "phrase-per-pair" else text_index
    query = torch.randn(len(image_index), Q, D)
    with torch.no_grad():
        image_kv = attention.project_kv(image_memory, image_memory)
        text_kv = attention.project_kv(text_memory, text_memory)
        memory = PairMemory(image_kv, text_kv, text_valid, image_index, memory_text_index, grid)
        got = attention.attend_pairs(query, memory)
        want = _reference(attention, query, image_memory, text_memory, text_valid, image_index, text_index)
    assert torch.allclose(got, want, atol=1e-5)


def test_grid_and_gathered_paths_agree():
    attention, image_memory, text_memory, text_valid = _setup(1)
    image_index, text_index = torch.arange(B).repeat_interleave(P), torch.arange(P).repeat(B)
    query = torch.randn(B * P, Q, D)
    with torch.no_grad():
        kv = attention.project_kv(image_memory, image_memory), attention.project_kv(text_memory, text_memory)
        grid = attention.attend_pairs(query, PairMemory(*kv, text_valid, image_index, text_index, (B, P)))
        gathered = attention.attend_pairs(query, PairMemory(*kv, text_valid, image_index, text_index, None))
    assert torch.allclose(grid, gathered, atol=1e-6)


def test_pair_grid_needs_every_phrase_in_every_image_image_major():
    images, texts = torch.arange(2).repeat_interleave(3), torch.arange(3).repeat(2)
    assert pair_grid(images, texts, 2, 3) == (2, 3)
    assert pair_grid(texts, images, 3, 2) is None  # phrase-major
    assert pair_grid(images[:-1], texts[:-1], 2, 3) is None
    assert pair_grid(images, texts, 3, 3) is None  # an image without pairs
