"""``tune()``: search recipe fields with Optuna, one training run per trial.

Each trial is the recipe with the trial's values set (see :mod:`vgtool.training.search_space`),
trained by :func:`~vgtool.training.trainer.train` into its own run folder. Its value is its best
validation Acc@0.5 (what its ``best/`` checkpoint holds), maximised. A pruner stops trials whose
per-epoch Acc@0.5 falls behind; a trial whose loss diverges fails and the study goes on.

The study lives in a database (by default SQLite in the study folder), so running the same
command again adds trials to it. Layout of ``out``:
    study.db                  the Optuna study (unless ``storage`` names another database)
    trials/<number>/          each trial's run folder (see :mod:`vgtool.training.trainer`), and
                              trial.json: its state, values and duration
    study.json                every trial: number, state, params, value, duration, per-epoch values
    best_recipe.yaml          the best trial's recipe, for ``vgtool train --recipe``
    optimization_history.png  each trial's value and the best so far
    param_importances.png     how much each field mattered (from 2 completed trials on)
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from vgtool.atomic import write_bytes_atomic
from vgtool.config import apply_overrides, load_mapping, set_value
from vgtool.errors import ConfigError, InputError
from vgtool.training.search_space import SearchSpace, check_fields, load_search_space

if TYPE_CHECKING:  # this module imports optuna and torch only when it tunes, so the command
    # line can check its options first
    import optuna

METRIC = "acc@0.5"
PRUNERS = ("none", "median", "hyperband")
INSTALL_HINT = 'vgtool tune needs Optuna: pip install "vgtool[tune]"'
STUDY_DB = "study.db"
PLOTS = ("optimization_history.png", "param_importances.png")


@dataclass(frozen=True)
class TuneResult:
    """How a :func:`tune` call left the study.

    Attributes:
        study_name: the study's name in ``storage``.
        storage: the database URL.
        new_trials: trials this call ran.
        states: the study's trials counted by state (``complete``, ``pruned``, ``fail``, ...).
        best_number: the best trial's number; None before any trial completes.
        best_value: its Acc@0.5.
        best_params: its values of the searched fields.
        out_dir: the study folder.
        notes: what could not be written, and why (a plot that needs more trials).
    """

    study_name: str
    storage: str
    new_trials: int
    states: dict[str, int]
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    out_dir: str
    notes: tuple[str, ...] = ()


def import_optuna() -> Any:
    """The ``optuna`` module, or an :class:`InputError` that says how to install it."""
    try:
        import optuna
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return optuna


def tune(
    *,
    recipe: str | Path,
    space: str | Path | SearchSpace,
    out: str | Path,
    trials: int | None = 20,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int = 0,
    pruner: str | optuna.pruners.BasePruner = "median",
    sets: Sequence[str] = (),
    quiet: bool = False,
) -> TuneResult:
    """Run ``trials`` more trials of the study (see the module docstring for what is written).

    Args:
        recipe: the recipe file to start from.
        space: the search-space file (or one already loaded).
        out: the study folder.
        trials: new trials to run (None: until ``timeout``).
        timeout: start no new trial after this many seconds.
        storage: an Optuna storage URL; default ``sqlite:///<out>/study.db``.
        study_name: default: the recipe file's name without its suffix.
        seed: seeds the sampler, together with the number of trials the study holds already:
            the same commands draw the same values again, and a re-run does not repeat the first
            run's draws. Each trial trains with the recipe's own ``seed``, so trials differ only
            in the searched values.
        pruner: ``median`` (Optuna's MedianPruner), ``hyperband``, ``none``, or a pruner object.
        sets: ``key.path=value`` overrides applied to the recipe before the trial's values.
        quiet: no progress bars and no line per trial.

    Raises:
        ConfigError: a bad recipe or search space (before any trial runs).
        InputError: Optuna is not installed, or ``out`` holds trials of another study.
    """
    optuna = import_optuna()
    from vgtool.training.config import recipe_from_mapping
    from vgtool.training.trainer import TrainingDivergedError

    out = Path(out)
    space = space if isinstance(space, SearchSpace) else load_search_space(space)
    base = apply_overrides(load_mapping(recipe), sets)
    if recipe_from_mapping(base).data.val is None:
        raise ConfigError(f"{recipe}: tuning needs validation data: set data.val in the recipe")
    check_fields(space, base)
    pruner = make_pruner(pruner) if isinstance(pruner, str) else pruner
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{out / STUDY_DB}"
    study_name = study_name or Path(recipe).stem
    with _optuna_logs_errors_only(optuna):  # the line per trial comes from here
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            direction="maximize",
            pruner=pruner,
            load_if_exists=True,
        )
        done = len(study.trials)
        study.sampler = optuna.samplers.TPESampler(seed=sampler_seed(seed, done))
        _check_trial_folders(out, study, storage)
        order = [param.field for param in space.params]

        def objective(trial: optuna.Trial) -> float:
            return _run_trial(trial, space, base, out, quiet=quiet)

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            _write_trial_json(out, trial, order)
            _write_summary(study, out, storage, order, ())
            if not quiet:
                print(_trial_line(study, trial, order), file=sys.stderr, flush=True)

        notes: tuple[str, ...] = ()
        try:
            study.optimize(
                objective,
                n_trials=trials,
                timeout=timeout,
                catch=(TrainingDivergedError,),
                callbacks=[after_trial],
                gc_after_trial=True,
            )
            notes = write_plots(study, out)
        finally:  # also when interrupted: the summary holds every trial so far
            _write_summary(study, out, storage, order, notes)
        best = _best_trial(study)
        return TuneResult(
            study_name=study_name,
            storage=storage,
            new_trials=len(study.trials) - done,
            states=_count_states(study),
            best_number=best.number if best else None,
            best_value=best.value if best else None,
            best_params=_ordered(best.params, order) if best else {},
            out_dir=str(out),
            notes=notes,
        )


@contextmanager
def _optuna_logs_errors_only(optuna: Any) -> Iterator[None]:
    """Silence Optuna's line per trial (and its traceback for a diverged one) for a while."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """The pruner called ``name``: ``median``, ``hyperband`` or ``none``."""
    optuna = import_optuna()
    if name == "median":
        return optuna.pruners.MedianPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"pruner {name!r}: expected one of {', '.join(PRUNERS)}")


def sampler_seed(seed: int, trials_done: int) -> int:
    """The sampler's seed for a run of the study that starts after ``trials_done`` trials."""
    return (seed * 1_000_003 + trials_done) % 2**32


def trial_recipe(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The recipe mapping ``base`` with each searched field set to its value in ``params``."""
    mapping = json.loads(json.dumps(base))
    for field, value in params.items():
        set_value(mapping, field.split("."), value, f"search field {field}")
    return mapping


def _run_trial(
    trial: optuna.Trial, space: SearchSpace, base: dict[str, Any], out: Path, *, quiet: bool
) -> float:
    """Train the trial's recipe into ``out/trials/<number>``; report each validated epoch's
    Acc@0.5 to the pruner and stop where it says so. Returns the best Acc@0.5."""
    import optuna

    from vgtool.training.config import recipe_from_mapping
    from vgtool.training.trainer import TrainingDivergedError, train

    params = {param.field: param.suggest(trial) for param in space.params}
    mapping = trial_recipe(base, params)
    trial.set_user_attr("recipe", mapping)

    def on_epoch_end(epoch: int, metrics: dict[str, Any]) -> None:
        if METRIC not in metrics:
            return
        trial.report(metrics[METRIC], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"at epoch {epoch}")

    try:
        result = train(
            recipe_from_mapping(mapping),
            _trial_dir(out, trial.number),
            quiet=quiet,
            on_epoch_end=on_epoch_end,
        )
    except TrainingDivergedError as err:
        trial.set_user_attr("failed", str(err))
        raise
    best = result["counters"]["best_acc"]
    return best if best >= 0 else float("nan")  # nan: no grounded validation phrase; the trial fails


def _trial_dir(out: Path, number: int) -> Path:
    return out / "trials" / str(number)


def _check_trial_folders(out: Path, study: optuna.Study, storage: str) -> None:
    """Refuse a study folder whose ``trials/`` holds runs the study does not know (another study's)."""
    folder = out / "trials"
    known = {trial.number for trial in study.trials}
    strays = sorted(int(p.name) for p in (folder.iterdir() if folder.is_dir() else ()) if p.name.isdigit())
    strays = [n for n in strays if n not in known]
    if strays:
        raise InputError(
            f"{_trial_dir(out, strays[0])}: a trial study {study.study_name!r} in {storage} does not "
            "hold; give each study its own --out"
        )


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no completed trial
        return None


def _state(trial: optuna.trial.FrozenTrial) -> str:
    return trial.state.name.lower()


def _count_states(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.trials:
        counts[_state(trial)] = counts.get(_state(trial), 0) + 1
    return counts


def _ordered(params: dict[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """``params`` in the search space's order (fields it no longer has last)."""
    return {**{k: params[k] for k in order if k in params}, **params}


def _trial_record(trial: optuna.trial.FrozenTrial, order: Sequence[str]) -> dict[str, Any]:
    """A trial as ``study.json`` and ``trial.json`` hold it."""
    record = {
        "number": trial.number,
        "state": _state(trial),
        "params": _ordered(trial.params, order),
        "value": trial.value,
        "duration_s": round(trial.duration.total_seconds(), 2) if trial.duration else None,
        "epochs": {str(step): value for step, value in sorted(trial.intermediate_values.items())},
        "run": f"trials/{trial.number}",
    }
    if "failed" in trial.user_attrs:
        record["failed"] = trial.user_attrs["failed"]
    return record


def _write_trial_json(out: Path, trial: optuna.trial.FrozenTrial, order: Sequence[str]) -> None:
    folder = _trial_dir(out, trial.number)
    if folder.is_dir():
        write_bytes_atomic(
            folder / "trial.json", (json.dumps(_trial_record(trial, order), indent=2) + "\n").encode()
        )


def _write_summary(
    study: optuna.Study, out: Path, storage: str, order: Sequence[str], notes: Sequence[str]
) -> None:
    """``study.json`` and, once a trial has completed, ``best_recipe.yaml``."""
    best = _best_trial(study)
    summary = {
        "study_name": study.study_name,
        "storage": storage,
        "direction": "maximize",
        "metric": f"best validation {METRIC} of the trial's epochs",
        "states": _count_states(study),
        "best": {"number": best.number, "value": best.value, "params": _ordered(best.params, order)}
        if best
        else None,
        "trials": [_trial_record(trial, order) for trial in study.trials],
        "notes": list(notes),
    }
    write_bytes_atomic(out / "study.json", (json.dumps(summary, indent=2) + "\n").encode())
    if best is not None and "recipe" in best.user_attrs:
        params = ", ".join(f"{k}={_short(v)}" for k, v in _ordered(best.params, order).items())
        header = (
            f"# The best trial of study {study.study_name!r} (vgtool tune): trial {best.number}, "
            f"validation {METRIC} {best.value:.4f}\n# with {params}\n"
        )
        text = header + yaml.safe_dump(best.user_attrs["recipe"], sort_keys=False)
        write_bytes_atomic(out / "best_recipe.yaml", text.encode())


def write_plots(study: optuna.Study, out: Path) -> tuple[str, ...]:
    """Draw the optimisation history and the parameter importances with Optuna's matplotlib
    plots; return a note for each plot that cannot be drawn yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as optuna_plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    notes = []
    plots = {
        PLOTS[0]: (optuna_plots.plot_optimization_history, None if complete else "no completed trial yet"),
        PLOTS[1]: (optuna_plots.plot_param_importances, _importances_missing(complete)),
    }
    for name, (plot, missing) in plots.items():
        if missing is not None:
            notes.append(f"{name} not drawn: {missing}")
            continue
        # Optuna's plots are marked experimental and switch the global style: keep both local
        with warnings.catch_warnings(), matplotlib.rc_context():
            warnings.simplefilter("ignore")
            try:
                ax = plot(study, target_name=f"validation {METRIC}")
            except (ValueError, RuntimeError) as err:
                notes.append(f"{name} not drawn: {err}")
                continue
            ax.figure.savefig(out / name, dpi=110, bbox_inches="tight")
            plt.close(ax.figure)
    return tuple(notes)


def _importances_missing(complete: Sequence[optuna.trial.FrozenTrial]) -> str | None:
    """Why importances cannot be told from these completed trials yet; None where they can."""
    if len(complete) < 2:
        return f"needs 2 completed trials ({len(complete)} so far)"
    if len({t.value for t in complete}) < 2:
        return "every completed trial has the same value"
    names = {name for t in complete for name in t.params}
    if not any(len({json.dumps(t.params.get(name)) for t in complete}) > 1 for name in names):
        return "no searched field took two values in completed trials"
    return None


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _trial_line(study: optuna.Study, trial: optuna.trial.FrozenTrial, order: Sequence[str]) -> str:
    """One line on a finished trial: its values, its outcome and how long it took."""
    params = " ".join(f"{k}={_short(v)}" for k, v in _ordered(trial.params, order).items())
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    state = _state(trial)
    if state == "complete":
        outcome = f"{METRIC} {trial.value:.4f}"
        best = _best_trial(study)
        if best is not None and best.number != trial.number:
            outcome += f" (best: trial {best.number}, {best.value:.4f})"
    elif state == "pruned":
        outcome = f"pruned at epoch {trial.last_step} ({METRIC} {trial.value:.4f})"
    else:
        outcome = f"failed: {trial.user_attrs.get('failed', 'no validation accuracy')}"
    return f"trial {trial.number}: {params} -> {outcome} in {_duration(seconds)}"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else time.strftime("%H:%M:%S", time.gmtime(seconds))
