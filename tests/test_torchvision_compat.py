"""Install regression: timm, torchvision and transformers must import and work with vgtool's set-up,
whether or not torchvision's compiled extension matches the installed torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=240
    )


def test_fresh_interpreter_imports_timm_torchvision_transformers():
    result = _run(
        """
        from vgtool.torchvision_compat import ensure_torchvision_importable
        compiled = ensure_torchvision_importable()
        import torch, torchvision, timm
        from torchvision.ops import box_iou
        assert box_iou(torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[1., 0., 3., 2.]])).item() > 0.3
        model = timm.create_model("test_vit", pretrained=False, num_classes=0)
        assert model(torch.zeros(1, 3, 160, 160)).shape[0] == 1
        from transformers import BertConfig, BertModel
        BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
        print("compiled-ops" if compiled else "python-only")
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() in {"compiled-ops", "python-only"}


def test_vgtool_model_path_needs_no_manual_setup():
    """Building a model through vgtool's public API must never hit the torchvision import error."""
    result = _run(
        """
        import torch
        from vgtool.models.presets import config_from_preset
        from vgtool.models.vlgtr import build_model
        model = build_model(config_from_preset("vlgtr-tiny"))
        assert model.vision.embed_dim > 0
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_shim_is_idempotent():
    result = _run(
        """
        from vgtool.torchvision_compat import ensure_torchvision_importable
        first = ensure_torchvision_importable()
        import torchvision
        assert ensure_torchvision_importable() == first
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]
