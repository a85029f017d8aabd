"""A fine-tuned model keeps the source model's calibrated threshold, or is calibrated anew."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vgtool.checkpoint import model_postprocess, model_threshold, set_model_postprocess
from vgtool.cli.main import app
from vgtool.datasets.registry import DataConfig
from vgtool.errors import InputError
from vgtool.evaluation.calibrate import GRID
from vgtool.training.finetune import finetune

runner = CliRunner()
SOURCE_POSTPROCESS = {
    "threshold": 0.42,
    "max_no_object_fp": 0.2,
    "confidence": 0.0,
    "calibrated_on": "data/calib (split val)",
}


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    from vgtool.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 10, seed=3, image_size=(96, 96), phrases_per_image=2)
    return root


@pytest.fixture
def calibrated(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """The tiny checkpoint with a calibrated threshold of 0.42."""
    source = tmp_path / "calibrated"
    shutil.copytree(tiny_checkpoint, source)
    set_model_postprocess(source, dict(SOURCE_POSTPROCESS))
    return source


def _finetune(model: Path, data: Path, out: Path, *extra: str):
    args = ["finetune", "-m", str(model), "-d", str(data), "--split", "train", "--epochs", "1"]
    args += ["-b", "4", "--device", "cpu", "-o", str(out), "-q", *extra]
    return runner.invoke(app, args)


def test_set_and_read_the_postprocess_of_a_checkpoint(calibrated: Path, tiny_checkpoint: Path) -> None:
    assert model_postprocess(tiny_checkpoint) is None and model_threshold(tiny_checkpoint) == 0.5
    assert model_postprocess(calibrated) == SOURCE_POSTPROCESS and model_threshold(calibrated) == 0.42


def test_finetune_keeps_the_source_threshold_and_says_so(calibrated, synth_data, tmp_path) -> None:
    result = _finetune(
        calibrated, synth_data, tmp_path / "ft", "--val", str(synth_data), "--val-split", "val"
    )
    assert result.exit_code == 0, result.output
    assert (
        "kept the source model's calibrated threshold 0.42; --recalibrate to fit a new one on the "
        "validation data" in result.output
    )
    best = tmp_path / "ft" / "best"
    assert model_threshold(best) == 0.42
    assert model_postprocess(best) == {**SOURCE_POSTPROCESS, "kept_from": str(calibrated)}


def test_finetune_recalibrates_on_the_validation_data(calibrated, synth_data, tmp_path) -> None:
    val = ["--val", str(synth_data), "--val-split", "val"]
    result = _finetune(calibrated, synth_data, tmp_path / "ft", *val, "--recalibrate")
    assert result.exit_code == 0, result.output
    assert "kept the source" not in result.output
    assert f"recalibrated the threshold on {synth_data} (split val): " in result.output
    postprocess = model_postprocess(tmp_path / "ft" / "best")
    assert postprocess["calibrated_on"] == f"{synth_data} (split val)" and "kept_from" not in postprocess
    assert postprocess["n_no_object"] == 1  # the val split's one phrase that names nothing
    # the source's target rate and confidence are kept; the threshold is fitted anew
    assert (postprocess["max_no_object_fp"], postprocess["confidence"]) == (0.2, 0.0)
    assert postprocess["threshold"] in GRID.tolist()


def test_an_uncalibrated_source_gives_an_uncalibrated_model(tiny_checkpoint, synth_data, tmp_path) -> None:
    result = _finetune(tiny_checkpoint, synth_data, tmp_path / "ft")
    assert result.exit_code == 0, result.output
    assert "threshold" not in result.output
    assert model_postprocess(tmp_path / "ft" / "best") is None


def test_recalibrating_needs_validation_data(calibrated, synth_data, tmp_path) -> None:
    with pytest.raises(InputError, match="needs validation data"):
        finetune(
            model=calibrated,
            train=DataConfig(path=str(synth_data), split="train"),
            out_dir=tmp_path / "ft",
            recalibrate=True,
        )
    assert not (tmp_path / "ft").exists()
