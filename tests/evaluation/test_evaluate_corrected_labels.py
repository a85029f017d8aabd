"""``vgtool evaluate`` on annotators' corrected labels: a Label Studio JSON export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.conftest import random_image
from tests.datasets.test_dataset_labelstudio import export_tasks, write_export
from vgtool.cli.evaluate import evaluate_cli
from vgtool.datasets import DataConfig, load_samples
from vgtool.evaluation.evaluate import EvalConfig, evaluate_predictions

IMAGE_SIZES = {"my photos/cat 1.jpg": (200, 100), "shots/b c.png": (64, 48)}


@pytest.fixture
def corrected(tmp_path: Path) -> tuple[Path, Path]:
    """A corrected Label Studio export (six samples, two that name nothing) and its image folder."""
    images = tmp_path / "images"
    for seed, (name, size) in enumerate(IMAGE_SIZES.items()):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        random_image(*size, seed=seed).save(images / name)
    return write_export(tmp_path / "export" / "project-1.json", export_tasks()), images


def test_the_ground_truth_as_predictions_scores_perfectly(
    corrected: tuple[Path, Path], tmp_path: Path
) -> None:
    export, images = corrected
    data = DataConfig(path=str(export), image_root=str(images))
    results = [
        {
            "image_id": s.image_id,
            "category_id": 1,
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "score": 1.0,
            "phrase": s.phrase,
        }
        for s in load_samples(data)
        for x0, y0, x1, y1 in s.boxes_xyxy.tolist()
    ]
    (tmp_path / "p.json").write_text(json.dumps(results), encoding="utf-8")
    metrics = evaluate_predictions(
        predictions=tmp_path / "p.json", data=data, out_dir=tmp_path / "eval", config=EvalConfig(plots=False)
    )
    assert metrics["overall"]["n_samples"] == 6 and metrics["overall"]["acc@0.5"] == 1.0
    assert metrics["by_kind"]["none"]["n_samples"] == 2 and metrics["overall"]["no_object_fp_rate"] == 0.0


def test_cli_evaluates_a_model_on_a_label_studio_export(
    corrected: tuple[Path, Path], tmp_path: Path, tiny_checkpoint: Path
) -> None:
    export, images = corrected
    app = typer.Typer()
    app.command()(evaluate_cli)
    out = tmp_path / "eval"
    args = ["--data", str(export), "--image-root", str(images), "-m", str(tiny_checkpoint), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--batch-size", "2", "--no-plots", "-q"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["n_samples"] == 6 and metrics["by_kind"]["none"]["n_samples"] == 2
