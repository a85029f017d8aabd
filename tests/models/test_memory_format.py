"""Inference preparation: channels-last where it is faster, with the same results."""

from __future__ import annotations

import torch

from vgtool.checkpoint import load_checkpoint
from vgtool.grounders.vlgtr import prepare_for_inference
from vgtool.models.bundled import DEFAULT_MODEL_DIR
from vgtool.models.memory_format import channels_last_trains_safely, prefers_channels_last
from vgtool.models.presets import config_from_preset
from vgtool.models.vlgtr import build_model

CPU = torch.device("cpu")


def test_channels_last_on_cpu_only_for_convolutional_backbones():
    assert prefers_channels_last(load_checkpoint(DEFAULT_MODEL_DIR), CPU)  # the bundled ResNet
    assert not prefers_channels_last(build_model(config_from_preset("vlgtr-tiny")), CPU)  # a ViT
    assert prefers_channels_last(build_model(config_from_preset("vlgtr-tiny")), torch.device("cuda"))


def test_channels_last_training_is_refused_where_onednn_crashes():
    import dataclasses

    tiny = config_from_preset("vlgtr-tiny")

    def resnet(width):
        kwargs = {"layers": [1, 1, 1, 1], "channels": [width, width, 32, 32], "stem_width": width}
        vision = dataclasses.replace(tiny.vision, name="resnet18", kwargs=kwargs)
        return build_model(dataclasses.replace(tiny, vision=vision))

    assert channels_last_trains_safely(load_checkpoint(DEFAULT_MODEL_DIR), CPU)  # 32+ channels
    assert channels_last_trains_safely(resnet(16), CPU)
    assert not channels_last_trains_safely(resnet(8), CPU)  # an 8-channel strided 1x1 shortcut
    assert channels_last_trains_safely(resnet(8), torch.device("cuda"))


def test_channels_last_backbone_gives_the_same_memory():
    net = load_checkpoint(DEFAULT_MODEL_DIR)
    size = net.config.vision.image_size
    torch.manual_seed(0)
    pixels = torch.randn(3, 3, size, size)
    with torch.inference_mode():
        before = net.encode_image(pixels)
        assert prepare_for_inference(net, CPU) is True
        conv = next(m for m in net.vision.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        after = net.encode_image(pixels.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(before.tokens, after.tokens, atol=1e-4)
    assert torch.allclose(before.keys, after.keys, atol=1e-4)
