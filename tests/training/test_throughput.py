"""``vgtool bench --train-recipe``: stage-1 training throughput with and without the feature cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vgtool.cli.main import app
from vgtool.errors import ConfigError
from vgtool.training.config import load_recipe
from vgtool.training.throughput import train_throughput

TINY = Path(__file__).parents[2] / "train" / "tiny_synth.yaml"
FROZEN = ["stages=[{name: frozen, epochs: 5, lr: 1.0e-3}]", "augment.hflip=0.5", "batch_size=4"]


def test_bench_train_recipe_reports_both_modes(tmp_path):
    from vgtool.synth import generate_dataset

    generate_dataset(tmp_path / "data", 6, seed=2, image_size=(96, 96), phrases_per_image=2)
    sets = [*FROZEN, f"data.train.path={tmp_path / 'data'}", f"data.val.path={tmp_path / 'data'}"]
    argv = ["bench", "--train-recipe", str(TINY), "--device", "cpu", "--out", str(tmp_path / "b.json"), "-q"]
    result = CliRunner().invoke(app, [*argv, *(x for s in sets for x in ("--set", s))])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["epochs"] == 2 and report["device"] == "cpu"
    for mode in ("uncached", "cached"):
        assert report[mode]["steady_samples_per_s"] > 0 and report[mode]["warmup_samples_per_s"] > 0
        assert report["train_samples_per_s"][mode] == report[mode]["steady_samples_per_s"]
    assert report["speedup"] > 0
    cached = report["cached"]
    assert cached["image_cache_hits"] + cached["image_cache_misses"] == 2 * report["train_samples"]
    assert 0 < cached["image_cache_misses"] < report["train_samples"] * 2


@pytest.mark.parametrize(
    ("overrides", "epochs", "message"),
    [
        (["stages=[{epochs: 2, vision_lr: 1.0e-4}]"], 2, "vision backbone is trained"),
        (["augment.random_resized_crop=0.5"], 2, "crops or colour-jitters"),
        (["augment.color_jitter=0.2"], 2, "crops or colour-jitters"),
        ([], 1, "at least 2"),
    ],
)
def test_throughput_refuses_what_cannot_use_the_cache(overrides, epochs, message):
    with pytest.raises(ConfigError, match=message):
        train_throughput(load_recipe(TINY, [*FROZEN, *overrides]), epochs=epochs)
