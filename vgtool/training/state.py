"""Training state on disk without pickle: tensors in safetensors, everything else in JSON.

``last/`` holds a loadable checkpoint (``config.json`` + ``model.safetensors``) plus
``optimizer.safetensors`` and ``train_state.json`` (counters, RNG states, the recipe). The folder
is built beside the old one and swapped in, so an interrupted save never leaves a half-written one.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vgtool.atomic import write_bytes_atomic
from vgtool.checkpoint import save_checkpoint
from vgtool.errors import CheckpointError

OPTIMIZER_NAME = "optimizer.safetensors"
STATE_NAME = "train_state.json"


@dataclass
class Counters:
    """Where training stands; all that ``--resume`` needs besides tensors."""

    stage: int = 0
    epoch: int = 0  # epoch within the stage
    batch: int = 0  # batches done within the epoch
    step: int = 0  # optimizer steps done in total
    best_acc: float = -1.0

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entries in state_dict["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"state.{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = value
    for param_id, entries in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, *rest = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def save_training_state(
    directory: Path, model, optimizer: torch.optim.Optimizer, counters: dict[str, Any], extra: dict[str, Any]
) -> Path:
    """Write model + optimizer + counters + RNG to ``directory`` (swapped in whole)."""
    from safetensors.torch import save

    directory = Path(directory)
    staging = directory.with_name(directory.name + ".new")
    if staging.exists():
        shutil.rmtree(staging)
    save_checkpoint(model, staging, extra={**extra, **counters})
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    rng_tensors, rng_meta = rng_state()
    write_bytes_atomic(staging / OPTIMIZER_NAME, save({**opt_tensors, **rng_tensors}))
    document = {"counters": counters, "optimizer": opt_meta, "rng": rng_meta, **extra}
    write_bytes_atomic(staging / STATE_NAME, (json.dumps(document, indent=1) + "\n").encode())
    old = directory.with_name(directory.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    if old.exists():
        shutil.rmtree(old)
    return directory


def recover_interrupted_save(directory: Path) -> None:
    """Finish a swap that a kill interrupted (``last.new`` complete, or only ``last.old`` left)."""
    staging = directory.with_name(directory.name + ".new")
    old = directory.with_name(directory.name + ".old")
    if not directory.exists():
        if (staging / STATE_NAME).exists():
            staging.rename(directory)
        elif old.exists():
            old.rename(directory)


def load_training_state(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read ``train_state.json`` and ``optimizer.safetensors`` of a ``last/`` folder."""
    from safetensors.torch import load_file

    recover_interrupted_save(directory)
    try:
        document = json.loads((directory / STATE_NAME).read_text(encoding="utf-8"))
        tensors = load_file(str(directory / OPTIMIZER_NAME))
    except FileNotFoundError as err:
        raise CheckpointError(
            f"{directory}: no training state to resume from ({err.filename} missing)"
        ) from err
    except (OSError, ValueError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{directory}: training state is unreadable ({err})") from err
    return document, tensors


def optimizer_state_from(document: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    return _unflatten_optimizer(
        {k: v for k, v in tensors.items() if k.startswith("state.")}, document["optimizer"]
    )
