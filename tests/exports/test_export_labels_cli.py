"""``vgtool export-labels`` parses, calls the library, reports; it never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vgtool.cli.main import app, main


def test_export_labels_writes_and_reports_each_format(grounded_run: Path, tmp_path: Path):
    out = tmp_path / "exports"
    args = ["export-labels", str(grounded_run), "--to", "yolo", "--to", "labelstudio", "--out", str(out)]
    args += ["--min-score", "0.4", "--classes", "dog", "--drop-empty", "--val-fraction", "0.5", "--seed", "7"]
    args += ["--images-mode", "link", "--confidence", "--url-prefix", "https://host/img/", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("yolo: ") and lines[0].endswith(str(out / "yolo"))
    assert lines[1].startswith("labelstudio: ") and "dropped" in lines[1]
    options = json.loads((out / "yolo" / "export.json").read_text())["options"]
    assert options == {
        "min_score": 0.4,
        "classes": ["dog"],
        "keep_empty": False,
        "images_mode": "link",
        "val_fraction": 0.5,
        "seed": 7,
        "confidence": True,
        "url_prefix": "https://host/img/",
    }
    first = json.loads((out / "labelstudio" / "tasks.json").read_text())[0]
    assert first["data"]["image"].startswith("https://host/img/")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--to", "kitti"], "error: --to: unknown format 'kitti'"),
        (["--to", "yolo", "--classes", "cat"], "error: --classes: 'cat' not among this run's classes"),
        (
            ["--to", "yolo", "--images-mode", "move"],
            "error: --images-mode: 'move' is not one of copy, link, none",
        ),
    ],
)
def test_errors_are_one_line(grounded_run: Path, tmp_path: Path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_:
        main(["export-labels", str(grounded_run), "--out", str(tmp_path / "x"), "-q", *extra])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_a_missing_run_is_named(tmp_path: Path, capsys):
    with pytest.raises(SystemExit):
        main(["export-labels", str(tmp_path), "--to", "voc"])
    assert "annotations.json: missing; not a finished vgtool run" in capsys.readouterr().err


def test_help_shows_an_example_per_format():
    result = CliRunner().invoke(app, ["export-labels", "--help"])
    assert result.exit_code == 0
    for name in ("labelstudio", "yolo", "voc", "coco", "odvg", "labelme"):
        assert f"--to {name}" in result.stdout


def test_the_command_and_the_exports_do_not_import_torch(grounded_run: Path, tmp_path: Path):
    code = (
        "import sys\n"
        "from vgtool.cli.main import main\n"
        "try:\n"
        f"    main(['export-labels', {str(grounded_run)!r}, '--to', 'coco', '--to', 'odvg', '--out', {str(tmp_path)!r}, '-q'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "odvg" / "train.jsonl").is_file()
