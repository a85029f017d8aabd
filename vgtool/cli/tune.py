"""``vgtool tune``: parse options, check the recipe and search space, call ``tune()``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from vgtool.cli.checks import check_device, check_file, check_out_folder, check_recipe
from vgtool.cli.options import OUT_FLAGS, QuietOpt, SetOpt, run_folder
from vgtool.errors import InputError


class PrunerChoice(str, Enum):
    median = "median"
    hyperband = "hyperband"
    none = "none"


def tune_cli(
    recipe: Annotated[
        Path, typer.Option("--recipe", help="Recipe file (YAML) to start from, e.g. train/tiny_synth.yaml.")
    ],
    space: Annotated[
        Path,
        typer.Option(
            "--space",
            help="Search-space file (YAML): recipe field (as --set names it, e.g. stages.0.lr) -> "
            "{type: float, low, high, log}, {type: int, low, high, step} or {type: categorical, "
            "choices}. See train/tune_space_example.yaml.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            *OUT_FLAGS,
            help="Study folder: study.db, trials/<number>/ (a training run each), study.json, "
            "best_recipe.yaml, optimization_history.png, param_importances.png.",
        ),
    ] = run_folder("tune"),
    trials: Annotated[
        int, typer.Option("--trials", min=1, help="New trials to run; a re-run adds them to the same study.")
    ] = 20,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0.0, help="Start no new trial after this many seconds.")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option("--storage", help="Optuna storage URL. Default: sqlite:///<out>/study.db."),
    ] = None,
    study_name: Annotated[
        str | None, typer.Option("--study-name", help="Default: the recipe file's name without .yaml.")
    ] = None,
    seed: Annotated[
        int,
        typer.Option("--seed", help="Seeds the search, so a study is reproducible where training is."),
    ] = 0,
    pruner: Annotated[
        PrunerChoice,
        typer.Option(
            "--pruner",
            help="Stop trials early on their per-epoch validation Acc@0.5: median (behind the "
            "median of earlier trials at that epoch), hyperband, or none.",
        ),
    ] = PrunerChoice.median,
    overrides: SetOpt = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N; overrides the recipe's.")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Search recipe fields for the best validation Acc@0.5.

    An Optuna study: each trial trains the recipe with its values set, into
    --out/trials/<number>/; unpromising trials are pruned. The same command again adds --trials
    more trials to the study.

    \b
    Example, then training the best recipe found:
      vgtool tune --recipe train/tiny_synth.yaml --space train/tune_space_example.yaml --trials 20
      vgtool train --recipe runs/tune/best_recipe.yaml --out runs/best
    """
    from vgtool.training.search_space import load_search_space  # torch-free, as is what follows
    from vgtool.training.tune import import_optuna, tune

    import_optuna()  # a missing extra is reported first, in one line
    sets = list(overrides or [])
    if device:
        sets.append(f"device={device}")
    check_device(device)
    check_recipe(recipe, sets)
    check_file(space, "--space", "search-space file")
    loaded = load_search_space(space)  # its fields are checked against the recipe in tune()
    check_out_folder(out)
    if storage is not None and "://" not in storage:
        raise InputError(f"--storage {storage!r}: expected a database URL, e.g. sqlite:///{out}/study.db")

    result = tune(
        recipe=recipe,
        space=loaded,
        out=out,
        trials=trials,
        timeout=timeout,
        storage=storage,
        study_name=study_name,
        seed=seed,
        pruner=pruner.value,
        sets=sets,
        quiet=quiet,
    )
    if quiet:
        return
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    states = ", ".join(f"{n} {state}" for state, n in sorted(result.states.items()))
    if result.best_number is None:
        summary = "no trial completed yet"
    else:
        summary = (
            f"best: trial {result.best_number}, acc@0.5 {result.best_value:.4f} -> "
            f"{Path(result.out_dir) / 'best_recipe.yaml'}"
        )
    typer.echo(f"study {result.study_name!r}: {states}; {summary}", err=True)
