"""Usage checks the commands run before any model code loads: paths, output folders, device names.

They use the standard library only (and nothing that imports torch), so a mistyped path or device
is reported within a fraction of a second rather than after torch and the model have loaded. Each
raises :class:`~vgtool.errors.InputError`, which ``main()`` prints as one ``error: ...`` line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vgtool.errors import InputError

DEVICE_SPEC = re.compile(r"(auto|cpu|cuda(:\d+)?)")
HF_PREFIX = "hf:"


def check_device(spec: str | None, option: str = "--device") -> None:
    """``spec`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (None: not given)."""
    if spec is None:
        return
    text = spec.strip().lower()
    if text == "mps" or text.startswith("mps:"):
        raise InputError(f"{option} {spec}: Apple GPUs (mps) are not supported; use {option} cpu")
    if not DEVICE_SPEC.fullmatch(text):
        raise InputError(f"{option} {spec!r}: expected auto, cpu, cuda or cuda:N")


def check_path(path: str | Path | None, option: str, what: str = "file or folder") -> None:
    """``path`` exists (None: not given); ``what`` names it in the message."""
    if path is not None and not Path(path).expanduser().exists():
        raise InputError(f"{path}: no such {what} ({option})")


def check_file(path: str | Path | None, option: str, what: str = "file") -> None:
    """``path`` is an existing file (None: not given)."""
    check_path(path, option, what)
    if path is not None and Path(path).expanduser().is_dir():
        raise InputError(f"{path}: is a folder, not a {what} ({option})")


def check_folder(path: str | Path | None, option: str, what: str = "folder") -> None:
    """``path`` is an existing folder (None: not given)."""
    check_path(path, option, what)
    if path is not None and not Path(path).expanduser().is_dir():
        raise InputError(f"{path}: is a file, not a {what} ({option})")


def check_model(spec: str | Path | None, option: str = "--model") -> None:
    """A ``--model`` spec names something that exists: the bundled model (None or ``default``), a
    hub model (``hf:...``, resolved later), a checkpoint or ``save_pretrained`` folder, or an
    exported ONNX folder (or a graph file in one)."""
    if spec is not None and str(spec).startswith(HF_PREFIX):
        return
    from vgtool.onnx_runtime.folder import is_onnx_spec, onnx_folder, read_manifest  # torch-free

    if is_onnx_spec(spec):
        read_manifest(onnx_folder(spec))
        return
    from vgtool.models.bundled import resolve_model_path  # torch-free

    resolve_model_path(spec)


def check_out_folder(path: str | Path, option: str = "--out") -> None:
    """``path`` can be an output folder: it is one already, or it can be created and written to."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder ({option})")
    _check_creatable(path, option)


def check_out_file(path: str | Path, option: str = "--out") -> None:
    """``path`` can be an output file: not a folder, in a folder that exists or can be created."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name ({option})")
    _check_creatable(path.parent, option)


def _check_creatable(folder: Path, option: str) -> None:
    """``folder`` exists and is writable, or its nearest existing ancestor is a writable folder."""
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{folder}: cannot be created, {ancestor} is a file ({option})")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        where = "is not writable" if ancestor == folder else f"cannot be created in {ancestor}"
        raise InputError(f"{folder}: {where} (permission denied) ({option})")


def check_recipe(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), option: str = "--recipe"
) -> None:
    """A recipe file exists and reads as a mapping, and the data and ``init_from`` paths it names
    (after ``--set`` overrides) exist. Its fields are checked in full when it is loaded."""
    from vgtool.config import apply_overrides, load_mapping  # torch-free

    check_file(path, option, "recipe file")
    recipe = apply_overrides(load_mapping(path), overrides)
    data = recipe.get("data") if isinstance(recipe.get("data"), dict) else {}
    for split in ("train", "val"):
        section = data.get(split)
        if isinstance(section, dict):
            for key, what in (("path", "dataset file or folder"), ("image_root", "image folder")):
                if section.get(key):
                    check_path(section[key], f"data.{split}.{key} in {path}", what)
    if recipe.get("init_from"):
        check_path(recipe["init_from"], f"init_from in {path}", "checkpoint folder")
