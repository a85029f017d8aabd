"""Data-parallel training: a 2-process CPU run (gloo, launched by torchrun) takes the same step as
one process over the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def four_single_box_samples(tmp_path_factory):
    """4 phrases with exactly one box each, so per-rank loss normalisation matches the global one."""
    from vgtool.synth import generate_dataset

    root = tmp_path_factory.mktemp("ddp")
    generate_dataset(root, 4, seed=5, image_size=(96, 96), splits=(("train", 1.0),))
    document = json.loads((root / "train.json").read_text())
    singles = [p for p in document["phrases"] if len(p["annotation_ids"]) == 1][:4]
    assert len(singles) == 4
    document["phrases"] = singles
    (root / "four.json").write_text(json.dumps(document))
    return root / "four.json"


def _recipe(tmp_path, data, batch_size):
    recipe = {
        "model": {"preset": "vlgtr-tiny"},
        "data": {"train": {"format": "coco", "path": str(data)}},
        "augment": {"hflip": 0.5, "random_resized_crop": 0.0},
        "stages": [{"name": "one-step", "epochs": 1, "lr": 0.5, "text_lr": 0.5, "vision_lr": 0.5}],
        "optimizer": "sgd",
        "weight_decay": 0.0,
        "grad_clip": 0.0,
        "batch_size": batch_size,
        "device": "cpu",
        "amp": "none",
    }
    path = tmp_path / f"recipe-{batch_size}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_two_process_step_matches_single_process_step(tmp_path, four_single_box_samples):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    single = subprocess.run(
        [
            sys.executable,
            "-m",
            "vgtool",
            "train",
            "--recipe",
            str(_recipe(tmp_path, four_single_box_samples, 4)),
            "--out",
            str(tmp_path / "single"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(_free_port()),
            "-m",
            "vgtool",
            "train",
            "--recipe",
            str(_recipe(tmp_path, four_single_box_samples, 2)),
            "--out",
            str(tmp_path / "ddp"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    for run in ("single", "ddp"):
        state = json.loads((tmp_path / run / "last" / "train_state.json").read_text())
        assert state["counters"]["step"] == 1
    a = load_file(str(tmp_path / "single" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "last" / "model.safetensors"))
    from vgtool.checkpoint import load_checkpoint  # noqa: F401  (both must also load)

    torch.manual_seed(0)
    from vgtool.models.presets import config_from_preset
    from vgtool.models.vlgtr import build_model

    initial = build_model(config_from_preset("vlgtr-tiny")).state_dict()
    moved = [k for k in a if not torch.equal(a[k], initial[k])]
    assert len(moved) > len(a) // 2  # the step really changed the model
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key
