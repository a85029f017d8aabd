from __future__ import annotations

import os
import stat

import pytest

from vgtool.atomic import atomic_open, write_bytes_atomic


def test_atomic_files_get_plain_open_permissions(tmp_path):
    write_bytes_atomic(tmp_path / "a.json", b"{}")
    with open(tmp_path / "plain", "wb") as handle:
        handle.write(b"{}")
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)
    assert mode & stat.S_IRGRP  # readable by others in the group, not 0600 like a bare mkstemp file


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    write_bytes_atomic(tmp_path / "a.json", b"old")
    with pytest.raises(RuntimeError), atomic_open(tmp_path / "a.json") as handle:
        handle.write(b"new")
        raise RuntimeError("disk full")
    assert (tmp_path / "a.json").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
