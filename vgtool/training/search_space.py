"""The search space of ``vgtool tune``: which recipe fields to search, over which values.

A search-space file (YAML) maps recipe fields, as dotted paths like ``--set`` takes them (a number
picks a list entry: ``stages.0.lr``), to the values to try::

    stages.0.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
    stages.0.warmup_steps: {type: int, low: 0, high: 20, step: 5}
    loss.giou_weight: {type: categorical, choices: [1.0, 2.0, 4.0]}
    batch_size: [4, 8]              # a list is short for {type: categorical, choices: [...]}

:func:`load_search_space` checks the file on its own (the command line does it before torch
loads); :func:`check_fields` checks it against a recipe: every field exists there and every value
the search can take makes a valid recipe.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vgtool.config import load_mapping, set_value
from vgtool.errors import ConfigError

ParamType = Literal["float", "int", "categorical"]
Choice = None | bool | int | float | str  # what Optuna's suggest_categorical takes
SPEC_KEYS: dict[str, tuple[str, ...]] = {
    "float": ("type", "low", "high", "log", "step"),
    "int": ("type", "low", "high", "log", "step"),
    "categorical": ("type", "choices"),
}


@dataclass(frozen=True)
class Param:
    """One searched recipe field.

    Attributes:
        field: the dotted recipe path (``stages.0.lr``); also the parameter's name in the study.
        type: ``float`` and ``int`` search ``[low, high]`` (both included), on a log scale with
            ``log``, in steps of ``step`` when given; ``categorical`` tries ``choices``.
    """

    field: str
    type: ParamType
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple[Choice, ...] = ()

    def __post_init__(self) -> None:
        if self.type == "categorical":
            _check_choices(self.choices)
            return
        number = int if self.type == "int" else float
        for name in ("low", "high"):
            _check_number(name, getattr(self, name), number)
        if self.step is not None:
            _check_number("step", self.step, number)
        if not self.low < self.high:  # type: ignore[operator]
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be above 0, not {self.step}")
        if self.log and self.step is not None and not (self.type == "int" and self.step == 1):
            raise ValueError("log and step do not go together: a log scale has no fixed step")
        if self.log and self.low <= (0 if self.type == "float" else 0.5):  # type: ignore[operator]
            raise ValueError(f"a log scale needs low above 0 (at least 1 for int), not {self.low}")
        if self.type == "int" and self.step is not None and (self.high - self.low) % self.step:
            raise ValueError(f"high - low ({self.high - self.low}) must be a multiple of step ({self.step})")

    def suggest(self, trial: Any) -> Choice:
        """This field's value in an Optuna ``trial``."""
        if self.type == "float":
            return trial.suggest_float(self.field, self.low, self.high, step=self.step, log=self.log)
        if self.type == "int":
            return trial.suggest_int(self.field, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_categorical(self.field, list(self.choices))

    def extremes(self) -> tuple[Choice, ...]:
        """Values that stand for the whole range when checking it against a recipe (as the
        search gives them: floats for a float range)."""
        if self.type == "float":
            return (float(self.low), float(self.high))  # type: ignore[arg-type]
        return self.choices if self.type == "categorical" else (self.low, self.high)

    def as_dict(self) -> dict[str, Any]:
        """The spec as a search-space file writes it."""
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        spec: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            spec["log"] = True
        if self.step is not None:
            spec["step"] = self.step
        return spec


@dataclass(frozen=True)
class SearchSpace:
    """The searched fields, in the file's order, and the file they came from (for messages)."""

    path: str
    params: tuple[Param, ...]

    def __post_init__(self) -> None:
        if not self.params:
            raise ConfigError(f"{self.path}: no fields to search")

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {param.field: param.as_dict() for param in self.params}


def load_search_space(path: str | Path) -> SearchSpace:
    """Read and check a search-space file (standard library and YAML only: no torch).

    Raises:
        ConfigError: one line, naming the file and the field.
    """
    return search_space_from_mapping(load_mapping(path), where=str(path))


def search_space_from_mapping(data: Mapping[str, Any], where: str = "search space") -> SearchSpace:
    """A :class:`SearchSpace` from ``{field: spec}``; ``where`` names the source in errors."""
    params = []
    for field, spec in data.items():
        if not isinstance(field, str) or not all(
            part.isidentifier() or part.isdigit() for part in field.split(".")
        ):
            raise ConfigError(f"{where}: {field!r} is not a recipe field (a dotted path like stages.0.lr)")
        try:
            params.append(_param(field, spec))
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{where}: {field}: {err}") from None
    return SearchSpace(where, tuple(params))


def _param(field: str, spec: Any) -> Param:
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, Mapping):
        raise ValueError(f"expected {{type: float|int|categorical, ...}} or a list of choices, got {spec!r}")
    kind = spec.get("type")
    if kind not in SPEC_KEYS:
        raise ValueError(f"type must be float, int or categorical, not {kind!r}")
    unknown = sorted(set(spec) - set(SPEC_KEYS[kind]))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} for type {kind} (known: {', '.join(SPEC_KEYS[kind])})")
    if kind == "categorical":
        if "choices" not in spec:
            raise ValueError("categorical needs choices: [...]")
        if not isinstance(spec["choices"], list):
            raise ValueError(f"choices must be a list, not {spec['choices']!r}")
        return Param(field, kind, choices=tuple(spec["choices"]))
    missing = [key for key in ("low", "high") if key not in spec]
    if missing:
        raise ValueError(f"{kind} needs low and high (missing: {', '.join(missing)})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"log must be true or false, not {log!r}")
    return Param(field, kind, low=spec["low"], high=spec["high"], step=spec.get("step"), log=log)


def _check_number(name: str, value: Any, number: type) -> None:
    if isinstance(value, str):
        raise ValueError(f"{name} {value!r} is text; YAML reads numbers like 1e-4 as text, write 1.0e-4")
    if number is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{name} must be an integer for type int, not {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")


def _check_choices(choices: tuple[Any, ...]) -> None:
    if not choices:
        raise ValueError("choices is empty; give at least one value")
    for choice in choices:
        if choice is not None and not isinstance(choice, bool | int | float | str):
            raise ValueError(f"choice {choice!r}: choices must be numbers, text, true/false or null")
    if len({(type(c), c) for c in choices}) < len(choices):
        raise ValueError(f"choices repeat a value: {list(choices)}")


def check_fields(space: SearchSpace, recipe: Mapping[str, Any]) -> None:
    """Check ``space`` against a recipe mapping (the file's, with ``--set`` overrides applied):
    every field is one the recipe schema has, and every value the search can take (``low``,
    ``high``, each choice) gives a valid recipe.

    Raises:
        ConfigError: naming the file, the field and, for an unknown one, the fields nearby.
    """
    from vgtool.training.config import recipe_from_mapping

    for param in space.params:
        _check_path(param.field, recipe, space.path)
        for value in param.extremes():
            mapping = copy.deepcopy(dict(recipe))
            set_value(mapping, param.field.split("."), value, f"{space.path}: {param.field}")
            try:
                recipe_from_mapping(mapping)
            except (ConfigError, ValueError) as err:
                raise ConfigError(f"{space.path}: {param.field}: {value!r} does not fit: {err}") from None


def _check_path(field: str, recipe: Mapping[str, Any], where: str) -> None:
    """``field`` names a value (not a section) in the :class:`RecipeConfig` schema; list entries
    it picks exist in ``recipe``."""
    from vgtool.models.config import ModelConfig
    from vgtool.training.config import RecipeConfig

    parts = field.split(".")
    tp: Any = RecipeConfig
    node: Any = recipe
    for i, part in enumerate(parts):
        here = ".".join(parts[:i]) or "the recipe"
        tp = _without_none(tp)
        origin = typing.get_origin(tp)
        if _is_dataclass_type(tp):
            names = sorted(f.name for f in dataclasses.fields(tp) if f.init)
            if tp is ModelConfig and i == 1:
                names = sorted([*names, "preset"])  # the recipe's model section names a preset
                if part == "preset":
                    tp = str
                    node = None
                    continue
            if part not in names:
                close = difflib.get_close_matches(part, names, n=1)
                hint = f"; did you mean {'.'.join([*parts[:i], close[0]])}?" if close else ""
                raise ConfigError(
                    f"{where}: {field}: unknown recipe field; {here} has {', '.join(names)}{hint}"
                )
            tp = typing.get_type_hints(tp)[part]
            node = node.get(part) if isinstance(node, Mapping) else None
        elif origin in (tuple, list):
            if not isinstance(node, list):
                raise ConfigError(
                    f"{where}: {field}: the recipe does not list {here}; write {here} out in it to "
                    f"search entry {part}"
                )
            if not (part.isdigit() and int(part) < len(node)):
                raise ConfigError(
                    f"{where}: {field}: {here} has {len(node)} entries in the recipe, numbered from 0"
                )
            tp, node = typing.get_args(tp)[0], node[int(part)]
        elif tp is Any or tp is dict or origin is dict:
            return  # a free-form mapping (backbone kwargs, text encoder overrides): any key goes
        else:
            raise ConfigError(f"{where}: {field}: {here} is a value, not a section")
    tp = _without_none(tp)
    if _is_dataclass_type(tp) or typing.get_origin(tp) in (tuple, list):
        raise ConfigError(f"{where}: {field}: is a section, not a value; search one of its fields")


def _without_none(tp: Any) -> Any:
    """``X | None`` -> ``X``; any other type as it is."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)
