from __future__ import annotations

import torch

from vgtool.grounders import load_grounder
from vgtool.prediction import batching


def test_auto_batch_size_fits_free_memory_and_is_capped(tiny_checkpoint, monkeypatch):
    grounder = load_grounder(tiny_checkpoint, device="cpu")
    cpu = torch.device("cpu")
    per_image = grounder.per_image_memory_bytes(num_phrases=4)
    assert grounder.per_image_memory_bytes(num_phrases=16) > per_image  # phrases cost memory too

    monkeypatch.setattr(batching, "available_memory_bytes", lambda device: 64 * 2**30)
    assert batching.auto_batch_size(cpu, per_image) == batching.MAX_AUTO_BATCH["cpu"]
    monkeypatch.setattr(batching, "available_memory_bytes", lambda device: 4 * 3 * per_image)
    assert batching.auto_batch_size(cpu, per_image) == 3  # a quarter of free memory, in whole images
    monkeypatch.setattr(batching, "available_memory_bytes", lambda device: 10)
    assert batching.auto_batch_size(cpu, per_image) == 1


def test_available_memory_is_read_from_the_system():
    assert batching.available_memory_bytes(torch.device("cpu")) > 2**20
