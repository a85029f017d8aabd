from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import typer
from typer.testing import CliRunner

from vgtool.cli.main import app, main

runner = CliRunner()


def test_ground_cli_writes_all_outputs(image_folder, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "ground",
            str(image_folder),
            "-p",
            "red car=car",
            "-p",
            "dog",
            "--model",
            str(tiny_checkpoint),
            "--out",
            str(out),
            "--threshold",
            "0",
            "--top-k",
            "1",
            "--quiet",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads((out / "annotations.json").read_text())
    assert len(document["images"]) == 4
    assert len(document["annotations"]) == 4 * 2  # top-k 1 per phrase and image
    assert (out / "run.json").is_file() and (out / "overlays" / "img0.jpg").is_file()
    assert any((out / "crops" / "car").iterdir())


def test_phrases_file_and_no_crops(image_folder, tiny_checkpoint, tmp_path):
    phrases = tmp_path / "p.txt"
    phrases.write_text("dog\ncat=pet\n")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "ground",
            str(image_folder / "img0.jpg"),
            "--phrases-file",
            str(phrases),
            "--model",
            str(tiny_checkpoint),
            "--out",
            str(out),
            "--no-crops",
            "--no-overlays",
            "-q",
            "-t",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [c["name"] for c in json.loads((out / "annotations.json").read_text())["categories"]] == [
        "dog",
        "pet",
    ]
    assert not (out / "crops").exists() and not (out / "overlays").exists()


def test_skipped_files_set_exit_status_3(image_folder, tiny_checkpoint, tmp_path):
    (image_folder / "zero.jpg").write_bytes(b"")
    result = runner.invoke(
        app,
        [
            "ground",
            str(image_folder),
            "-p",
            "dog",
            "--model",
            str(tiny_checkpoint),
            "-o",
            str(tmp_path / "o"),
            "-q",
        ],
    )
    assert result.exit_code == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ground", "/no/such/folder", "-p", "dog", "--model", "{ckpt}"], "no such file, folder or glob"),
        (["ground", "{images}", "--model", "{ckpt}"], "no phrases"),
        (["ground", "{images}", "-p", "dog", "--model", "/no/such/model"], "no such checkpoint folder"),
        (
            ["ground", "{images}", "-p", "dog", "--model", "{ckpt}", "--device", "tpu"],
            "expected auto, cpu, cuda",
        ),
        (["info", "/no/such/model"], "no such checkpoint folder"),
    ],
)
def test_known_errors_are_one_clean_line(argv, message, image_folder, tiny_checkpoint, tmp_path, capsys):
    argv = [a.format(ckpt=tiny_checkpoint, images=image_folder) for a in argv] + [
        "-o",
        str(tmp_path / "o"),
    ] * (argv[0] == "ground")
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: ") and message in err and "Traceback" not in err and len(err.splitlines()) == 1
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "Usage:"),  # no command: the help, no traceback
        (["ground"], "ground [OPTIONS]"),
        (["ground", "imgs", "--no-such-option"], "No such option: --no-such-option"),
        (["no-such-command"], "No such command"),
    ],
)
def test_usage_errors_show_usage_not_a_traceback(argv, expected, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert expected in text and "Traceback" not in text


def test_info_reports_parameters_and_sources(tiny_checkpoint):
    result = runner.invoke(app, ["info", str(tiny_checkpoint), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    parts = info["parts"]
    assert info["parameters"]["total"] == sum(p["total"] for p in parts.values()) > 0
    assert parts["vision"]["source"] == "timm:test_vit"
    assert "all-MiniLM-L6-v2" in parts["text"]["source"]


def test_init_creates_a_loadable_checkpoint(tmp_path):
    result = runner.invoke(app, ["init", "--out", str(tmp_path / "m"), "--set", "decoder.num_queries=3"])
    assert result.exit_code == 0, result.output
    from vgtool.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "m").config.decoder.num_queries == 3
    bad = runner.invoke(app, ["init", "--out", str(tmp_path / "n"), "--set", "decoder.nope=1"])
    assert bad.exit_code != 0 and "unknown config key decoder.nope" in str(bad.exception)


COMMANDS = sorted(typer.main.get_command(app).commands)


@pytest.mark.parametrize("argv", [["--help"]] + [[c, "--help"] for c in COMMANDS])
def test_help_is_fast_and_has_an_example(argv):
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "vgtool", *argv], capture_output=True, text=True, timeout=60
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 0 and "Example" in result.stdout
    assert elapsed < 10  # generous: this guards against importing torch, not a speed target


def test_help_does_not_import_torch():
    code = "import sys; from vgtool.cli.main import app; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_synth_train_finetune_evaluate_through_the_cli(tmp_path, tiny_checkpoint):
    """The model's life cycle from the command line, on tiny data."""
    data = tmp_path / "synth"
    assert (
        runner.invoke(
            app, ["synth", "--out", str(data), "--n", "10", "--seed", "2", "--image-size", "96", "-q"]
        ).exit_code
        == 0
    )
    result = runner.invoke(
        app,
        [
            "finetune",
            "--model",
            str(tiny_checkpoint),
            "--data",
            str(data),
            "--split",
            "train",
            "--val",
            str(data),
            "--val-split",
            "val",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--out",
            str(tmp_path / "ft"),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ft" / "best" / "model.safetensors").is_file()
    recipe = json.loads((tmp_path / "ft" / "recipe.json").read_text())
    assert recipe["init_from"] == str(tiny_checkpoint) and recipe["stages"][0]["vision_lr"] == 0
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(tmp_path / "ft" / "best"),
            "--data",
            str(data),
            "--split",
            "test",
            "--out",
            str(tmp_path / "eval"),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["overall"]["acc@0.5"] <= 1.0
