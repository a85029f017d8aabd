"""Weights from elsewhere are read only through torch.load(weights_only=True)."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from vgtool.checkpoint import load_checkpoint
from vgtool.errors import CheckpointError
from vgtool.models.presets import config_from_preset
from vgtool.models.vlgtr import build_model
from vgtool.weights_import import import_torch_weights, read_torch_state_dict


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("wrap", ["plain", "model", "state_dict_ddp"])
def test_notebook_state_dict_round_trips(tmp_path, wrap):
    torch.manual_seed(0)
    model = build_model(config_from_preset("vlgtr-tiny")).eval()
    state = model.state_dict()
    if wrap == "model":
        state = {"model": state, "epoch": 3}
    elif wrap == "state_dict_ddp":
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(state, tmp_path / "w.pth")
    out = import_torch_weights(tmp_path / "w.pth", preset="vlgtr-tiny", out=tmp_path / "ckpt")
    reloaded = load_checkpoint(out)
    ids = torch.tensor([[101, 2417, 102]])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(
            model(x, ids, torch.ones_like(ids))["pred_boxes"],
            reloaded(x, ids, torch.ones_like(ids))["pred_boxes"],
        )


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pth", "wb") as handle:
        pickle.dump({"weight": _Exploit(marker)}, handle)
    torch.save({"weight": _Exploit(marker)}, tmp_path / "evil_zip.pt")
    for name in ("evil.pth", "evil_zip.pt"):
        with pytest.raises(CheckpointError, match="refused or unreadable"):
            read_torch_state_dict(tmp_path / name)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "refused or unreadable"),
        (b"\x80\x04garbage", "refused or unreadable"),
        ("list", "not a state dict"),
    ],
)
def test_bad_weight_files(tmp_path, content, message):
    path = tmp_path / "w.pt"
    if content == "list":
        torch.save([torch.zeros(1)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_torch_state_dict(path)


def test_wrong_architecture_names_the_keys(tmp_path):
    model = build_model(config_from_preset("vlgtr-tiny"))
    state = model.state_dict()
    state.pop("class_head.bias")
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match=r"missing key.*class_head\.bias"):
        import_torch_weights(tmp_path / "w.pth", preset="vlgtr-tiny", out=tmp_path / "ckpt")
