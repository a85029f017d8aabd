"""``vgtool finetune`` on annotators' corrected labels: Label Studio and CVAT/datumaro exports."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import random_image
from tests.datasets.test_dataset_coco_attributes import VAL, write_datumaro
from tests.datasets.test_dataset_labelstudio import export_tasks, write_export
from vgtool.cli.main import app

runner = CliRunner()


def _finetune(tmp_path: Path, checkpoint: Path, *args: str) -> None:
    out = tmp_path / "ft"
    fixed = ["--epochs", "1", "--batch-size", "2", "--out", str(out), "--device", "cpu", "-q"]
    result = runner.invoke(app, ["finetune", "--model", str(checkpoint), *args, *fixed])
    assert result.exit_code == 0, result.output
    assert (out / "best" / "model.safetensors").is_file()


def test_finetune_on_a_label_studio_export(tmp_path: Path, tiny_checkpoint: Path) -> None:
    images = tmp_path / "images"
    for seed, (name, size) in enumerate(
        {"my photos/cat 1.jpg": (200, 100), "shots/b c.png": (64, 48)}.items()
    ):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        random_image(*size, seed=seed).save(images / name)
    export = write_export(tmp_path / "export" / "project-1.json", export_tasks())
    args = ["--data", str(export), "--format", "labelstudio", "--image-root", str(images)]
    _finetune(tmp_path, tiny_checkpoint, *args, "--val", str(export))
    recipe = json.loads((tmp_path / "ft" / "recipe.json").read_text())
    assert recipe["data"]["train"]["format"] == "labelstudio"


def test_finetune_on_a_datumaro_coco_export(tmp_path: Path, tiny_checkpoint: Path) -> None:
    root = write_datumaro(tmp_path / "cvat", {"train": VAL})
    for seed, image in enumerate(VAL["images"]):
        path = root / "images" / "train" / image["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        random_image(image["width"], image["height"], seed=seed).save(path)
    _finetune(tmp_path, tiny_checkpoint, "--data", str(root), "--split", "train")
