"""Make ``import torchvision`` work when its compiled extension cannot load.

The torchvision wheel on PyPI is built against CUDA. Paired with a CPU-only torch its ``_C``
extension fails to load, and ``torchvision/_meta_registrations.py`` then raises on import because it
registers fake kernels for ``torchvision::nms`` and ``torchvision::qnms``, two operators that only
the extension defines. timm imports torchvision, and so does transformers while loading models, so
that one failure takes both down.

``ensure_torchvision_importable()`` runs before torchvision is first imported. It tries to load the
extension the way torchvision does; only when that fails does it define the two operator schemas
(without kernels), which is all the import needs. The pure-Python parts of torchvision (``ops.box_iou``,
transforms) then work; its compiled kernels (nms, roi_align, io.decode_jpeg) stay unavailable, and
vgtool never calls them (see ``vgtool.box_ops.nms``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY: torch.library.Library | None = None  # kept alive: dropping it would undefine the ops
_EXTENSION_LOADED: bool | None = None


def _op_exists(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _try_load_extension(package_dir: Path) -> bool:
    for lib_path in sorted(package_dir.glob("_C*.so")) + sorted(package_dir.glob("_C*.pyd")):
        try:
            torch.ops.load_library(str(lib_path))
            return True
        except (OSError, RuntimeError, ImportError):
            continue
    return False


def ensure_torchvision_importable() -> bool:
    """Prepare torch so that ``import torchvision`` succeeds.

    Returns:
        True when torchvision's compiled ops are usable, False when only its Python parts are.
    """
    global _LIBRARY, _EXTENSION_LOADED
    if _EXTENSION_LOADED is not None:
        return _EXTENSION_LOADED
    if "torchvision" in sys.modules:
        from torchvision.extension import _has_ops

        _EXTENSION_LOADED = bool(_has_ops())
        return _EXTENSION_LOADED
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        _EXTENSION_LOADED = False
        return False
    if _try_load_extension(Path(spec.origin).parent):
        _EXTENSION_LOADED = True
        return True
    missing = [name for name in _SCHEMAS if not _op_exists(name)]
    if missing:
        _LIBRARY = torch.library.Library("torchvision", "DEF")
        for name in missing:
            _LIBRARY.define(_SCHEMAS[name])
    _EXTENSION_LOADED = False
    return False


def torchvision_ops_available() -> bool:
    """Whether torchvision's compiled kernels (nms, roi_align, ...) can be called."""
    return ensure_torchvision_importable()
