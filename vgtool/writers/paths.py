"""Turn untrusted text (phrases, category names, file names) into safe path components."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

from vgtool.errors import InputError

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
MAX_COMPONENT_BYTES = 80


def safe_component(text: str, max_bytes: int = MAX_COMPONENT_BYTES) -> str:
    """A single file or folder name derived from ``text``: no separators, no control characters,
    never ``.``/``..`` or hidden, at most ``max_bytes`` UTF-8 bytes. Changed or shortened names get
    a short hash of the original so that different texts stay different."""
    normalised = unicodedata.normalize("NFC", text)
    cleaned = _UNSAFE.sub("_", normalised).strip().strip(".")
    cleaned = re.sub(r"\s+", "_", cleaned)
    changed = cleaned != normalised
    if not cleaned:
        cleaned, changed = "phrase", True
    encoded = cleaned.encode("utf-8")
    if len(encoded) > max_bytes:
        cleaned = encoded[: max_bytes - 9].decode("utf-8", errors="ignore")
        changed = True
    if changed:
        digest = hashlib.sha1(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:8]
        cleaned = f"{cleaned}_{digest}"
    return cleaned


def inside(root: Path, relative: str | Path) -> Path:
    """``root / relative``, refusing any result that would escape ``root``.

    Raises:
        InputError: the relative path is absolute or climbs out with ``..``.
    """
    relative = Path(relative)
    if relative.is_absolute() or ".." in relative.parts:
        raise InputError(f"{relative}: refusing to write outside {root}")
    return root / relative
