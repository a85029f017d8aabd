"""Usage errors are reported at once: before torch is imported, as one line (or click's usage text)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import random_image

# runs main() and prints, as the last line of stdout, the exit status and whether torch was imported
PROBE = """
import json, sys
from vgtool.cli.main import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as exit_:
    code = exit_.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, str]:
    """An image folder, a file, a names list and a recipe whose training data does not exist."""
    images = tmp_path / "images"
    images.mkdir()
    random_image(32, 24).save(images / "a.jpg")
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "names.txt").write_text("cat\n")
    (tmp_path / "recipe.yaml").write_text(
        "model: {preset: vlgtr-tiny}\ndata:\n  train: {format: coco, path: /no/such/data}\n"
    )
    return {
        "images": str(images),
        "file": str(tmp_path / "a-file"),
        "names": str(tmp_path / "names.txt"),
        "recipe": str(tmp_path / "recipe.yaml"),
        "out": str(tmp_path / "out"),
    }


CASES = [
    # (argv, exit status, what stderr says)
    (["ground", "/no/such/folder", "-p", "dog"], 1, "/no/such/folder: no such file, folder or glob match"),
    (["ground", "{images}", "-p", "dog", "--device", "tpu"], 1, "--device 'tpu': expected auto, cpu, cuda"),
    (["ground", "{images}", "-p", "dog", "--device", "cuda:one"], 1, "expected auto, cpu, cuda or cuda:N"),
    (["ground", "{images}", "-p", "dog", "--device", "mps"], 1, "mps) are not supported"),
    (["ground", "{images}"], 1, "no phrases: give --phrase TEXT"),
    (["ground", "{images}", "--phrases-file", "/no/phrases.txt"], 1, "cannot read phrases file"),
    (
        ["ground", "{images}", "-p", "dog", "-m", "/no/such/model"],
        1,
        "/no/such/model: no such checkpoint folder",
    ),
    (["ground", "{images}", "-p", "dog", "--categories", "/no/cats.json"], 1, "no such file (--categories)"),
    (["ground", "{images}", "-p", "dog=pet", "--categories", "{names}"], 1, "class 'pet'"),
    (["ground", "{images}", "-p", "dog", "-o", "{file}"], 1, "exists and is not a folder (--out)"),
    (["ground", "{images}", "-p", "dog", "-o", "{file}/sub"], 1, "is a file (--out)"),
    (["ground", "{images}", "-p", "dog", "--merge", "some"], 2, "Invalid value for '--merge'"),
    (["evaluate", "-d", "/no/data"], 1, "/no/data: no such dataset file or folder (--data)"),
    (["evaluate", "-d", "{images}", "--predictions", "/no/p.json"], 2, "does not exist"),
    (["evaluate", "-d", "{images}", "-m", "/no/model"], 1, "no such checkpoint folder"),
    (["train", "--recipe", "/no/recipe.yaml"], 1, "no such recipe file (--recipe)"),
    (["train", "--recipe", "{recipe}"], 1, "/no/such/data: no such dataset file or folder (data.train.path"),
    (["train", "--recipe", "{recipe}", "--set", "data.train.path={images}", "--device", "gpu"], 1, "'gpu'"),
    (["finetune", "-m", "/no/model", "-d", "{images}"], 1, "no such checkpoint folder"),
    (["finetune", "-m", "default", "-d", "/no/data"], 1, "no such dataset file or folder (--data)"),
    (["finetune", "-m", "default", "-d", "{images}", "--val", "/no/val"], 1, "(--val)"),
    (["finetune", "-m", "default", "-d", "{images}", "--recalibrate"], 2, "needs validation data"),
    (["tune", "--recipe", "/no/recipe.yaml", "--space", "{file}"], 1, "no such recipe file (--recipe)"),
    (
        ["tune", "--recipe", "{recipe}", "--set", "data.train.path={images}", "--space", "{names}"],
        1,
        "names.txt: expected a mapping at the top level",
    ),
    (
        ["distill", "--teacher", "default", "-i", "/no/images", "-p", "dog"],
        1,
        "/no/images: not a folder of images (--images)",
    ),
    (["distill", "--teacher", "/no/teacher", "-i", "{images}", "-p", "dog"], 1, "no such checkpoint folder"),
    (["distill", "--teacher", "default", "-i", "{images}"], 2, "give at least one --phrase"),
    (["bench", "-i", "/no/images"], 1, "no such image folder (--images)"),
    (["bench", "--train-recipe", "/no/recipe.yaml"], 1, "no such recipe file (--train-recipe)"),
    (["bench", "--memory-scaling", "200"], 2, "give at least two image counts"),
    (["bench", "--baseline", "other"], 1, "the only baseline is 'pipeline'"),
    (["bench", "-o", "{file}/report.json"], 1, "is a file (--out)"),
    (["info", "/no/model"], 1, "no such checkpoint folder"),
    (["export", "/no/checkpoint", "-o", "{out}"], 1, "no such checkpoint folder (CHECKPOINT)"),
    (["convert", "/no/weights.pth", "--preset", "vlgtr-tiny", "-o", "{out}"], 1, "no such weights file"),
    (["synth", "-o", "{file}"], 1, "exists and is not a folder (--out)"),
    (["init", "-o", "{file}/model"], 1, "is a file (--out)"),
    (["init", "--preset", "vlgtr-tiny"], 2, "Missing option '--out'"),
]


def _run(argv: list[str]) -> tuple[dict, str, str]:
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stdout, result.stderr


@pytest.mark.parametrize(("argv", "code", "message"), CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_usage_errors_come_before_torch(argv, code, message, paths):
    outcome, _, err = _run([arg.format(**paths) for arg in argv])
    assert outcome["code"] == code, err
    assert message.format(**paths) in err, err
    assert "Traceback" not in err
    if code == 1:
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not outcome["torch"], "torch was imported before the usage error was reported"


def test_init_list_needs_no_out():
    outcome, out, err = _run(["init", "--list"])
    assert outcome["code"] == 0, err
    assert "vlgtr-tiny" in out.splitlines()
    assert not outcome["torch"]
