from __future__ import annotations

import torch

from vgtool.checkpoint import load_checkpoint
from vgtool.ground import pipeline


def test_auto_batch_size_fits_free_memory_and_is_capped(tiny_checkpoint, monkeypatch):
    net = load_checkpoint(tiny_checkpoint)
    cpu = torch.device("cpu")
    per_image = pipeline.per_image_memory_bytes(net, num_phrases=4)
    assert pipeline.per_image_memory_bytes(net, num_phrases=16) > per_image  # phrases cost memory too

    monkeypatch.setattr(pipeline, "_available_memory_bytes", lambda device: 64 * 2**30)
    assert pipeline.auto_batch_size(cpu, net, 4) == pipeline.MAX_AUTO_BATCH["cpu"]
    monkeypatch.setattr(pipeline, "_available_memory_bytes", lambda device: 4 * 3 * per_image)
    assert pipeline.auto_batch_size(cpu, net, 4) == 3  # a quarter of free memory, in whole images
    monkeypatch.setattr(pipeline, "_available_memory_bytes", lambda device: 10)
    assert pipeline.auto_batch_size(cpu, net, 4) == 1


def test_available_memory_is_read_from_the_system():
    assert pipeline._available_memory_bytes(torch.device("cpu")) > 2**20
