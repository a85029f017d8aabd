"""The model vgtool uses when ``--model`` is not given."""

from __future__ import annotations

from pathlib import Path

from vgtool.errors import CheckpointError

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "models" / "default"


def resolve_model_path(model: str | Path | None) -> Path:
    """The checkpoint folder for ``--model`` (None or ``default``: the bundled model).

    Raises:
        CheckpointError: the folder does not exist, or no bundled model is installed.
    """
    if model is None or str(model) == "default":
        if not (DEFAULT_MODEL_DIR / "config.json").is_file():
            raise CheckpointError(
                "no bundled default model in this install; pass --model CHECKPOINT_DIR "
                "(make one with `vgtool init` or `vgtool train`)"
            )
        return DEFAULT_MODEL_DIR
    path = Path(model).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    return path
