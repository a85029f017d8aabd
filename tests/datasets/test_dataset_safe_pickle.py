from __future__ import annotations

import builtins
import codecs
import os
import pickle
from pathlib import Path

import pytest

from vgtool.datasets.safe_pickle import safe_load
from vgtool.errors import InputError


class _Calls:
    """Pickles as ``func(*args)``: what a malicious file would run on a plain ``pickle.load``."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _attacks(marker: Path) -> dict[str, object]:
    return {
        "os.system": _Calls(os.system, f"touch {marker}"),
        "builtins.exec": _Calls(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.open": _Calls(builtins.open, str(marker), "w"),
        "nested in data": {"refs": [1, 2, _Calls(os.system, f"touch {marker}")]},
        "_codecs.encode, not latin1": _Calls(codecs.encode, "x", "rot13"),
    }


@pytest.mark.parametrize("name", list(_attacks(Path("x"))))
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_refuses_globals_without_running_them(tmp_path: Path, name: str, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.p"
    path.write_bytes(pickle.dumps(_attacks(marker)[name], protocol=protocol))
    with pytest.raises(InputError, match=r"evil\.p: not a plain-data pickle: refusing"):
        safe_load(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_plain_data_round_trips(protocol: int) -> None:
    data = {"a": [1, 2.5, None, True], "b": ("x", b"\x00\xff"), "c": {3, 4}, "d": frozenset({"z"})}
    assert safe_load(pickle.dumps(data, protocol=protocol)) == data


def test_python2_byte_strings_decode_as_latin1() -> None:
    # Python 2 ``pickle.dumps('caf\xc3\xa9', 2)``: SHORT_BINSTRING of the UTF-8 bytes.
    assert safe_load(b"\x80\x02U\x05caf\xc3\xa9q\x00.") == "caf\xc3\xa9"
    assert safe_load(b"\x80\x02U\x05caf\xc3\xa9q\x00.", encoding="bytes") == b"caf\xc3\xa9"


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (b"", "Ran out of input"),
        (pickle.dumps({"a": 1}, protocol=2)[:-3], "not a plain-data pickle"),
        (b"not a pickle at all", "not a plain-data pickle"),
    ],
)
def test_corrupt_bytes(source: bytes, match: str) -> None:
    with pytest.raises(InputError, match=match):
        safe_load(source)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.p: cannot read pickle"):
        safe_load(tmp_path / "nope.p")
