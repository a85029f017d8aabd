"""The command line reads the same everywhere: one meaning per short flag, the usual aliases, the
same ``--out`` scheme, and help that is never cut off."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict

import pytest
import typer
from typer.testing import CliRunner

from vgtool.cli.main import app

runner = CliRunner()
# short flag -> the long option it stands for, in every command that has it
SCHEME = {
    "-p": "--phrase",
    "-m": "--model",
    "-o": "--out",
    "-b": "--batch-size",
    "-t": "--threshold",
    "-k": "--top-k",
    "-r": "--recursive",
    "-q": "--quiet",
    "-d": "--data",
    "-i": "--images",
    "-h": "--help",
}
ALIASES = {"--threshold": "--conf", "--nms-iou": "--iou", "--top-k": "--max-det"}


def _commands() -> dict:
    """Every command of the app by its path (``ground``, ...), nested groups included, with the
    context it runs in (which holds the app's help option names)."""
    found = {}

    def walk(command, path: str, parent) -> None:
        ctx = command.context_class(
            command,
            info_name=path.split()[-1] if path else "vgtool",
            parent=parent,
            **command.context_settings,
        )
        found[path] = (command, ctx)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}".strip(), ctx)

    walk(typer.main.get_command(app), "", None)
    return {path: entry for path, entry in found.items() if path}


CONTEXTS = _commands()
COMMANDS = {path: command for path, (command, _) in CONTEXTS.items()}


def _options(command) -> list:
    """The command's options, ``-h/--help`` included (Typer may carry its own copy of click, so
    options are told from arguments by their ``param_type_name``)."""
    (ctx,) = [ctx for cmd, ctx in CONTEXTS.values() if cmd is command]
    return [p for p in command.get_params(ctx) if p.param_type_name == "option"]


def _long_name(option) -> str:
    return next(opt for opt in option.opts if opt.startswith("--"))


def test_every_command_is_walked():
    assert {"ground", "train", "finetune", "evaluate", "bench", "distill", "init"} <= set(COMMANDS)


def test_a_short_flag_means_one_thing_in_every_command():
    meanings: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path, command in COMMANDS.items():
        shorts_here: list[str] = []
        for option in _options(command):
            for opt in [*option.opts, *option.secondary_opts]:
                if opt.startswith("-") and not opt.startswith("--"):
                    meanings[opt].add(_long_name(option))
                    where[(opt, _long_name(option))].append(path)
                    shorts_here.append(opt)
        assert len(shorts_here) == len(set(shorts_here)), f"{path}: a short flag used twice"
    assert {"-p", "-m", "-o", "-h"} <= set(meanings)
    clashes = {short: sorted(longs) for short, longs in meanings.items() if len(longs) > 1}
    assert not clashes, {s: {long: where[(s, long)] for long in longs} for s, longs in clashes.items()}
    outside = {short: long for short, (long,) in meanings.items() if SCHEME.get(short) != long}
    assert not outside, f"short flags outside the scheme in vgtool/cli/options.py: {outside}"


@pytest.mark.parametrize(("long", "alias"), sorted(ALIASES.items()))
def test_aliases_wherever_the_option_is(long, alias):
    having = [path for path, command in COMMANDS.items() if any(long in o.opts for o in _options(command))]
    assert having
    for path in having:
        (option,) = [o for o in _options(COMMANDS[path]) if long in o.opts]
        assert alias in option.opts, f"{path} {long} lacks {alias}"
    assert all(long in o.opts for command in COMMANDS.values() for o in _options(command) if alias in o.opts)


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("ground", ["--threshold", "--conf", "--top-k", "--max-det", "--nms-iou", "--iou"]),
        ("evaluate", ["--threshold", "--conf", "--nms-iou", "--iou"]),
        ("bench", ["--top-k", "--max-det"]),
        ("distill", ["--threshold", "--conf"]),
    ],
)
def test_aliases_of_the_commands_that_filter_boxes(command, options):
    names = {opt for option in _options(COMMANDS[command]) for opt in option.opts}
    assert set(options) <= names


def test_an_alias_sets_the_same_value():
    command = COMMANDS["ground"]
    parsed = command.make_context("ground", ["x", "--conf", "0.3", "--iou", "0.4", "--max-det", "2"])
    assert (parsed.params["threshold"], parsed.params["nms_iou"], parsed.params["top_k"]) == (0.3, 0.4, 2)


@pytest.mark.parametrize(
    ("command", "default"),
    [
        ("ground", "runs/ground"),
        ("train", "runs/train"),
        ("finetune", "runs/finetune"),
        ("tune", "runs/tune"),
        ("evaluate", "runs/evaluate"),
        ("distill", "runs/distill"),
        ("bench", "runs/bench"),
        ("init", None),  # writes a checkpoint, synth a dataset, ...: the place is asked for
        ("synth", None),
        ("export", None),
        ("convert", None),
    ],
)
def test_out_defaults_follow_runs_command(command, default):
    (out,) = [o for o in _options(COMMANDS[command]) if "--out" in o.opts]
    assert "-o" in out.opts
    if default is None:
        assert out.required
    else:
        assert str(out.default) == default


def _squeeze(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_help_shows_every_option_in_full(path):
    """At the 80 columns of a pipe or CI log, no help text is cut: wrapped, nothing lost."""
    result = runner.invoke(app, [*path.split(), "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    assert "…" not in result.output and "Usage: vgtool" in result.output
    shown = _squeeze(result.output)
    command = COMMANDS[path]
    for param in command.params:
        if getattr(param, "help", None):
            assert _squeeze(param.help) in shown, f"{path} {param.name}: help cut"


def test_help_through_a_pipe_is_complete():
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    result = subprocess.run(
        [sys.executable, "-m", "vgtool", "ground", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    # the longest option help of all, the model spec with its four hub ids
    for model in (
        "hf:IDEA-Research/grounding-dino-tiny",
        "hf:google/owlv2-base-patch16-ensemble",
        "hf:omlab/omdet-turbo-swin-tiny-hf",
    ):
        assert model in _squeeze(result.stdout)
    assert "Usage: vgtool ground" in result.stdout


@pytest.mark.parametrize("command", sorted(typer.main.get_command(app).commands))
def test_the_command_list_shows_the_summary_whole(command):
    """``vgtool --help`` lists each command with the first sentence of its help, cut with "..."
    when longer than the line has room for."""
    result = runner.invoke(app, ["--help"], terminal_width=80)
    (line,) = [line for line in result.output.splitlines() if line.startswith(f"  {command} ")]
    assert not line.endswith("..."), line


def test_evaluate_takes_every_dataset_format():
    from vgtool.cli.evaluate import DataFormatChoice
    from vgtool.datasets.registry import DATA_FORMATS

    assert tuple(choice.value for choice in DataFormatChoice) == DATA_FORMATS
