"""``vgtool tune``: a study from the command line, and its usage errors (before torch loads)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.cli.test_usage_errors import _run
from vgtool.cli.main import app, main

TINY = Path(__file__).parents[2] / "train" / "tiny_synth.yaml"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """A search space, a bad one, a data folder for the recipe's paths and a plain file."""
    (tmp_path / "data").mkdir()
    (tmp_path / "space.yaml").write_text("stages.0.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    (tmp_path / "bad.yaml").write_text("stages.0.lr: {type: float, low: 1.0e-2, high: 1.0e-4}\n")
    (tmp_path / "a-file").write_text("x\n")
    return {
        k: str(tmp_path / v)
        for k, v in {"space": "space.yaml", "bad": "bad.yaml", "data": "data", "file": "a-file"}.items()
    }


def _argv(files: dict[str, str], *extra: str, space: str = "{space}") -> list[str]:
    sets = [f"data.train.path={files['data']}", f"data.val.path={files['data']}"]
    argv = ["tune", "--recipe", str(TINY), "--space", space, *(x for s in sets for x in ("--set", s)), *extra]
    return [arg.format(**files) for arg in argv]


@pytest.mark.parametrize(
    ("extra", "space", "code", "message"),
    [
        ([], "{bad}", 1, "{bad}: stages.0.lr: low (0.01) must be below high (0.0001)"),
        ([], "/no/space.yaml", 1, "/no/space.yaml: no such search-space file (--space)"),
        ([], "{data}", 1, "is a folder, not a search-space file (--space)"),
        (["-o", "{file}"], "{space}", 1, "exists and is not a folder (--out)"),
        (["--storage", "study.db"], "{space}", 1, "--storage 'study.db': expected a database URL"),
        (["--pruner", "asha"], "{space}", 2, "Invalid value for '--pruner'"),
        (["--trials", "0"], "{space}", 2, "Invalid value for '--trials'"),
        (["--device", "tpu"], "{space}", 1, "--device 'tpu': expected auto, cpu, cuda"),
    ],
)
def test_usage_errors_come_before_torch(files, extra, space, code, message):
    outcome, _, err = _run(_argv(files, *extra, space=space))
    assert outcome["code"] == code, err
    assert message.format(**files) in err, err
    if code == 1:
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not outcome["torch"]


def test_an_unknown_field_is_one_line(files, tmp_path, capsys):
    (tmp_path / "typo.yaml").write_text("stages.0.lrr: [0.001]\n")
    with pytest.raises(SystemExit) as exit_:
        main(_argv(files, "-o", str(tmp_path / "out"), space=str(tmp_path / "typo.yaml")))
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and len(err.strip().splitlines()) == 1
    assert "typo.yaml: stages.0.lrr: unknown recipe field; stages.0 has epochs, lr," in err
    assert "did you mean stages.0.lr?" in err


def test_without_optuna_one_line_says_how_to_install(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(SystemExit) as exit_:
        main(_argv(files, "-o", str(tmp_path / "out")))
    assert exit_.value.code == 1
    assert capsys.readouterr().err == 'error: vgtool tune needs Optuna: pip install "vgtool[tune]"\n'


def test_a_study_from_the_command_line(tmp_path, monkeypatch):
    """Training replaced by a stand-in that reports Acc@0.5 = lr * 100."""
    import vgtool.training.trainer as trainer

    def fake(recipe, out_dir, *, quiet=False, on_epoch_end=None, **_):
        Path(out_dir).mkdir(parents=True)
        acc = recipe.stages[0].lr * 100
        on_epoch_end(1, {"acc@0.5": acc})
        return {"counters": {"best_acc": acc}, "val": {}, "out_dir": str(out_dir)}

    monkeypatch.setattr(trainer, "train", fake)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"stages.0.lr": [0.001, 0.004]}))
    out = tmp_path / "study"
    sets = ["--set", f"data.train.path={tmp_path}", "--set", f"data.val.path={tmp_path}"]
    argv = ["tune", "--recipe", str(TINY), "--space", str(space), "-o", str(out), "--trials", "3", *sets]
    result = CliRunner().invoke(app, [*argv, "--study-name", "lr", "--seed", "1", "--pruner", "none"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["trial 0", "trial 1", "trial 2"]
    assert lines[-1].startswith("study 'lr': 3 complete; best: trial ")
    assert lines[-1].endswith(f"acc@0.5 0.4000 -> {out / 'best_recipe.yaml'}")
    study = json.loads((out / "study.json").read_text())
    assert study["study_name"] == "lr" and len(study["trials"]) == 3
    assert yaml.safe_load((out / "best_recipe.yaml").read_text())["stages"][0]["lr"] == 0.004

    again = CliRunner().invoke(app, [*argv, "--study-name", "lr", "--trials", "1", "-q"])
    assert again.exit_code == 0 and again.output == ""
    assert len(json.loads((out / "study.json").read_text())["trials"]) == 4
