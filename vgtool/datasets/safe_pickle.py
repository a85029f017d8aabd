"""Load pickles that may only hold plain data: dicts, lists, tuples, strings, bytes and numbers.

Dataset pickles (RefCOCO's ``refs(unc).p`` and friends) come from the internet. ``pickle.load`` on
them would run whatever callable the file names, so this loader refuses every global except a tiny
allowlist of harmless constructors, and raises :class:`InputError` before anything is called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from vgtool.errors import InputError


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What ``_codecs.encode`` does for ``bytes`` pickled by Python 3 at protocol 2, and nothing more."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


# (module, name) -> what the pickle gets instead. Protocols 0-2 name builtins ``__builtin__`` (an
# overridden ``find_class`` sees the names before ``fix_imports`` would map them).
_ALLOWED: dict[tuple[str, str], Any] = {
    (module, name): value
    for module in ("builtins", "__builtin__")
    for name, value in (("set", set), ("frozenset", frozenset), ("bytearray", bytearray))
} | {("_codecs", "encode"): _latin1_bytes}


class _PlainDataUnpickler(pickle.Unpickler):
    """An unpickler that cannot import anything outside :data:`_ALLOWED`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def safe_load(source: str | Path | bytes, *, encoding: str = "latin1") -> Any:
    """Unpickle plain data from a file or from bytes, refusing anything that could run code.

    Args:
        source: a path to a pickle file, or the pickled bytes themselves.
        encoding: how Python 2 ``str`` objects are decoded; ``"latin1"`` keeps every byte, and
            ``"bytes"`` leaves them as ``bytes``.

    Returns:
        The unpickled object.

    Raises:
        InputError: the file is missing, corrupt, or names a global outside the allowlist.
    """
    if isinstance(source, bytes | bytearray):
        label, data = "<pickle bytes>", bytes(source)
    else:
        label = str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as err:
            raise InputError(f"{label}: cannot read pickle: {err.strerror or err}") from None
    try:
        return _PlainDataUnpickler(io.BytesIO(data), encoding=encoding).load()
    except Exception as err:  # nothing ran: any failure here is a corrupt or refused file
        raise InputError(f"{label}: not a plain-data pickle: {err or type(err).__name__}") from None
