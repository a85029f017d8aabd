"""``tune()``: search spaces and their errors, a study of real tiny trainings (pruned, resumed), and
the study's files; most cases train with a stand-in that reports made-up accuracies."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from vgtool.config import load_mapping
from vgtool.errors import ConfigError, InputError
from vgtool.training.config import load_recipe
from vgtool.training.search_space import check_fields, load_search_space, search_space_from_mapping
from vgtool.training.tune import tune

TRAIN = Path(__file__).parents[2] / "train"
TINY = TRAIN / "tiny_synth.yaml"
SPACE = {
    "stages.0.lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "batch_size": [4, 8],
}


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    from vgtool.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 10, seed=3, image_size=(96, 96), phrases_per_image=2)
    return root


def _sets(data: Path, epochs: int = 2) -> list[str]:
    """The tiny recipe as one short stage on ``data``, on the CPU."""
    return [
        f"data.train.path={data}",
        f"data.val.path={data}",
        f"stages=[{{name: frozen, epochs: {epochs}, lr: 1.0e-3}}]",
        "batch_size=4",
        "device=cpu",
    ]


def _space_file(folder: Path, space: dict | None = None) -> Path:
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space or SPACE, sort_keys=False))
    return path


class PruneTrial(optuna.pruners.BasePruner):
    """Prunes trial ``number`` at its first report, and no other."""

    def __init__(self, number: int) -> None:
        self.number = number

    def prune(self, study, trial) -> bool:
        return trial.number == self.number


# ---- search spaces --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"stages.0.lr": {"type": "float", "low": 0.1, "high": 0.1}}, "low (0.1) must be below high (0.1)"),
        ({"stages.0.lr": {"type": "float", "low": 1.0, "high": 0.5}}, "must be below high"),
        ({"batch_size": {"type": "categorical", "choices": []}}, "choices is empty"),
        ({"batch_size": []}, "choices is empty"),
        ({"batch_size": {"type": "categorical"}}, "categorical needs choices"),
        ({"batch_size": {"type": "categorical", "choices": [4, 4]}}, "choices repeat a value"),
        ({"batch_size": {"type": "categorical", "choices": [[4]]}}, "choices must be numbers"),
        ({"batch_size": {"type": "range", "low": 1, "high": 2}}, "type must be float, int or categorical"),
        ({"batch_size": {"low": 1, "high": 2}}, "type must be float, int or categorical"),
        ({"batch_size": {"type": "int", "low": 1, "hi": 2}}, "unknown key 'hi' for type int"),
        ({"batch_size": {"type": "int", "low": 1}}, "needs low and high (missing: high)"),
        ({"batch_size": {"type": "int", "low": 1.5, "high": 4}}, "must be an integer for type int"),
        ({"batch_size": {"type": "int", "low": 2, "high": 9, "step": 2}}, "must be a multiple of step"),
        ({"stages.0.lr": {"type": "float", "low": "1e-4", "high": 0.1}}, "write 1.0e-4"),
        (
            {"stages.0.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}},
            "log scale needs low above 0",
        ),
        ({"stages.0.lr": {"type": "float", "low": 0.1, "high": 1, "log": True, "step": 0.1}}, "log and step"),
        (
            {"stages.0.lr": {"type": "float", "low": 0.1, "high": 1, "log": "yes"}},
            "log must be true or false",
        ),
        ({"stages.0.lr": 0.001}, "or a list of choices, got 0.001"),
        ({"stages..lr": [1.0]}, "is not a recipe field"),
        ({}, "no fields to search"),
    ],
)
def test_bad_search_spaces_are_refused_with_the_file_and_field(tmp_path, space, message):
    path = _space_file(tmp_path, space) if space else tmp_path / "empty.yaml"
    if not space:
        path.write_text("{}\n")
    with pytest.raises(ConfigError) as err:
        load_search_space(path)
    assert message in str(err.value)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"stages.0.lrr": [1.0]}, "stages.0.lrr: unknown recipe field; stages.0 has epochs, lr,"),
        ({"stages.0.lrr": [1.0]}, "did you mean stages.0.lr?"),
        ({"bacth_size": [4]}, "the recipe has amp, augment, batch_size,"),
        ({"model.decoder.num_querys": [3]}, "did you mean model.decoder.num_queries?"),
        ({"data.val.pth": ["x"]}, "did you mean data.val.path?"),
        ({"stages.2.lr": [1.0]}, "stages.2.lr: stages has 2 entries in the recipe, numbered from 0"),
        ({"stages.first.lr": [1.0]}, "numbered from 0"),
        ({"stages": [1]}, "stages: is a section, not a value"),
        ({"augment": [1]}, "augment: is a section, not a value"),
        ({"augment.hflip.p": [0.5]}, "augment.hflip is a value, not a section"),
        (
            {"batch_size": {"type": "float", "low": 4, "high": 8}},
            "4.0 does not fit: batch_size: expected an integer",
        ),
        ({"optimizer": ["adamw", "adam"]}, "'adam' does not fit: optimizer: 'adam' is not one of"),
        ({"model.preset": ["vlgtr-tiny", "nope"]}, "'nope' does not fit: unknown model preset 'nope'"),
        (
            {"loss.no_object_weight": {"type": "float", "low": 0.0, "high": 0.5}},
            "no_object_weight must be > 0",
        ),
    ],
)
def test_search_fields_are_checked_against_the_recipe(space, message):
    with pytest.raises(ConfigError) as err:
        check_fields(search_space_from_mapping(space, "space.yaml"), load_mapping(TINY))
    assert str(err.value).startswith("space.yaml: ") and message in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "field",
    ["stages.1.vision_lr", "model.preset", "model.decoder.dropout", "model.vision.kwargs.depth", "seed"],
)
def test_fields_the_recipe_has(field):
    value = {"model.preset": ["vlgtr-tiny"], "model.vision.kwargs.depth": [1, 2], "seed": [0, 1]}
    space = search_space_from_mapping({field: value.get(field, [0.1, 0.2])})
    check_fields(space, load_mapping(TINY))


@pytest.mark.parametrize(
    ("recipe", "space"),
    [
        ("tiny_synth.yaml", "tune_space_example.yaml"),
        ("vlgtr_flickr30k.yaml", "tune_space_vlgtr.yaml"),
        ("vlgtr_refcoco.yaml", "tune_space_vlgtr.yaml"),
    ],
)
def test_example_spaces_fit_their_recipes(recipe, space):
    check_fields(load_search_space(TRAIN / space), load_mapping(TRAIN / recipe))


def test_a_recipe_without_validation_data_cannot_be_tuned(tmp_path):
    with pytest.raises(ConfigError, match="tuning needs validation data"):
        tune(recipe=TINY, space=_space_file(tmp_path), out=tmp_path / "t", sets=["data.val=null"])


# ---- a study of real tiny trainings ------------------------------------------------------------------


def test_study_prunes_resumes_and_writes_its_files(synth_data, tmp_path, capsys):
    out, space = tmp_path / "study", _space_file(tmp_path)
    sets = _sets(synth_data)
    first = tune(recipe=TINY, space=space, out=out, trials=3, pruner=PruneTrial(1), sets=sets, quiet=True)
    assert first.new_trials == 3 and first.states == {"complete": 2, "pruned": 1}
    assert first.study_name == "tiny_synth" and (out / "study.db").is_file()

    # the pruned trial stopped after its first epoch and left a whole run folder behind
    pruned = out / "trials" / "1"
    vals = [json.loads(x) for x in (pruned / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in vals if r["type"] == "val"] == [1]
    for name in ("recipe.json", "best/model.safetensors", "last/train_state.json", "curves.png"):
        assert (pruned / name).is_file(), name
    assert json.loads((pruned / "trial.json").read_text())["state"] == "pruned"

    # the re-run adds one trial to the same study
    second = tune(recipe=TINY, space=space, out=out, trials=1, sets=sets)
    assert second.new_trials == 1 and sum(second.states.values()) == 4
    assert "trial 3: stages.0.lr=" in capsys.readouterr().err

    study = json.loads((out / "study.json").read_text())
    assert [t["number"] for t in study["trials"]] == [0, 1, 2, 3]
    assert [t["state"] for t in study["trials"]] == ["complete", "pruned", "complete", "complete"]
    for trial in study["trials"]:
        assert set(trial["params"]) == {"stages.0.lr", "batch_size"} and trial["duration_s"] > 0
        assert list(trial["epochs"]) == (["1"] if trial["state"] == "pruned" else ["1", "2"])
        if trial["state"] == "complete":
            assert trial["value"] == max(trial["epochs"].values())
    complete = [t for t in study["trials"] if t["state"] == "complete"]
    best = max(complete, key=lambda t: t["value"])
    assert study["best"]["value"] == best["value"] == second.best_value
    assert study["trials"][3]["params"] != study["trials"][0]["params"]  # a re-run draws anew

    recipe = load_recipe(out / "best_recipe.yaml")
    number = study["best"]["number"]
    assert recipe.stages[0].lr == study["best"]["params"]["stages.0.lr"]
    assert recipe.batch_size == study["best"]["params"]["batch_size"]
    assert recipe.stages[0].epochs == 2 and recipe.device == "cpu"  # the --set overrides stay
    trained = json.loads((out / "trials" / str(number) / "recipe.json").read_text())
    assert trained["stages"][0]["lr"] == recipe.stages[0].lr
    assert (out / "optimization_history.png").read_bytes()[:4] == b"\x89PNG"
    # a few images and epochs train no better than chance: the trials may all score the same
    same = "param_importances.png not drawn: every completed trial has the same value"
    assert (out / "param_importances.png").is_file() != (second.notes == (same,))
    assert study["notes"] == list(second.notes)


# ---- the study's bookkeeping, with a stand-in for training --------------------------------------------


@pytest.fixture
def fake_train(monkeypatch):
    """Replace training with a run that reports Acc@0.5 = lr * 100 (half of it after epoch 1)."""
    import vgtool.training.trainer as trainer

    runs = []

    def fake(recipe, out_dir, *, quiet=False, on_epoch_end=None, **_):
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True)
        acc = min(recipe.stages[0].lr * 100, 1.0)
        runs.append(recipe)
        if acc < 0:
            raise trainer.TrainingDivergedError("loss became nan at step 3")
        for epoch, value in ((1, acc / 2), (2, acc)):
            if on_epoch_end is not None:
                on_epoch_end(epoch, {"acc@0.5": value})
        return {"counters": {"best_acc": acc}, "val": {"acc@0.5": acc}, "out_dir": str(out_dir)}

    monkeypatch.setattr(trainer, "train", fake)
    return runs


def test_the_same_seed_draws_the_same_values(tmp_path, fake_train):
    space = _space_file(tmp_path)
    params = []
    for name in ("a", "b", "c"):
        seed = 7 if name != "c" else 8
        tune(recipe=TINY, space=space, out=tmp_path / name, trials=3, seed=seed, quiet=True)
        study = json.loads((tmp_path / name / "study.json").read_text())
        params.append([t["params"] for t in study["trials"]])
    assert params[0] == params[1] and params[0] != params[2]
    assert (tmp_path / "a" / "param_importances.png").read_bytes()[:4] == b"\x89PNG"


def test_one_completed_trial_draws_no_importances(tmp_path, fake_train):
    result = tune(recipe=TINY, space=_space_file(tmp_path), out=tmp_path / "t", trials=1, quiet=True)
    assert result.notes == ("param_importances.png not drawn: needs 2 completed trials (1 so far)",)
    assert (tmp_path / "t" / "optimization_history.png").is_file()
    assert not (tmp_path / "t" / "param_importances.png").exists()
    assert json.loads((tmp_path / "t" / "study.json").read_text())["notes"] == list(result.notes)


def test_a_diverged_trial_fails_and_the_study_goes_on(tmp_path, fake_train, capsys):
    space = _space_file(tmp_path, {"stages.0.lr": [-1.0, 0.005]})  # -1: the stand-in diverges
    result = tune(recipe=TINY, space=space, out=tmp_path / "t", trials=6, pruner="none")
    states = {
        t["params"]["stages.0.lr"]: t["state"]
        for t in json.loads((tmp_path / "t" / "study.json").read_text())["trials"]
    }
    assert states == {-1.0: "fail", 0.005: "complete"}
    assert result.best_params == {"stages.0.lr": 0.005} and result.best_value == pytest.approx(0.5)
    assert "-> failed: loss became nan at step 3" in capsys.readouterr().err


def test_timeout_stops_starting_trials(tmp_path, fake_train):
    result = tune(
        recipe=TINY, space=_space_file(tmp_path), out=tmp_path / "t", trials=None, timeout=0, quiet=True
    )
    assert result.new_trials == 0 and result.best_number is None
    assert not (tmp_path / "t" / "best_recipe.yaml").exists()
    assert json.loads((tmp_path / "t" / "study.json").read_text())["trials"] == []


def test_another_studys_trials_are_not_overwritten(tmp_path, fake_train):
    space = _space_file(tmp_path)
    tune(recipe=TINY, space=space, out=tmp_path / "t", trials=1, quiet=True)
    with pytest.raises(InputError, match="give each study its own --out"):
        tune(recipe=TINY, space=space, out=tmp_path / "t", trials=1, study_name="other", quiet=True)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("median", optuna.pruners.MedianPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_pruners_by_name(name, kind):
    from vgtool.training.tune import make_pruner

    assert isinstance(make_pruner(name), kind)


def test_an_unknown_pruner_is_refused():
    from vgtool.training.tune import make_pruner

    with pytest.raises(ConfigError, match="pruner 'asha': expected one of none, median, hyperband"):
        make_pruner("asha")


def test_without_optuna_one_line_says_how_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(InputError, match=r'^vgtool tune needs Optuna: pip install "vgtool\[tune\]"$'):
        tune(recipe=TINY, space=_space_file(tmp_path), out=tmp_path / "t")
