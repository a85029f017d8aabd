"""The model vgtool uses when ``--model`` is not given."""

from __future__ import annotations

from pathlib import Path

from vgtool.errors import CheckpointError

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "models" / "default"
# What the bundled model was trained on, and so all it knows.
DEFAULT_MODEL_DOMAIN = (
    "the coloured 2D shapes of the `vgtool synth` benchmark (circles, squares, triangles, stars and "
    "crosses in seven colours), not real photographs"
)
# A zero-shot model to suggest for real photographs.
SUGGESTED_PHOTO_MODEL = "hf:IDEA-Research/grounding-dino-tiny"


def is_default_model(model: str | Path | None) -> bool:
    """Whether ``--model`` names the bundled model (None, ``default`` or its folder), or an ONNX
    export of it (its manifest records the bundled model's domain)."""
    if model is None or str(model) == "default":
        return True
    from vgtool.onnx_runtime.folder import is_onnx_spec, onnx_folder, read_manifest

    try:
        if is_onnx_spec(model):
            return read_manifest(onnx_folder(model)).extra.get("domain") == DEFAULT_MODEL_DOMAIN
        return Path(model).expanduser().resolve() == DEFAULT_MODEL_DIR
    except (OSError, CheckpointError):
        return False


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
