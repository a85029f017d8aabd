"""Runs that stop early: SIGTERM unwinds like Ctrl-C, a full disk or a lost write permission ends the
run with one line; either way the journal stays valid and the same call resumes to the same bytes."""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import random_image
from tests.prediction.test_fake_grounder import BoxPerPhrase
from vgtool.cli.main import main
from vgtool.errors import OutputWriteError, Terminated
from vgtool.ground.folder_lock import OutputLock
from vgtool.ground.pipeline import GroundConfig, ground
from vgtool.ground.stopping import write_failure
from vgtool.writers.journal import Journal, read_journal

PHRASES = ["cat", "dog", "tall tree=tree"]
CONFIG = GroundConfig(batch_size=2, num_workers=0, quiet=True)
NUM_IMAGES = 8
FAILURES = [
    (errno.ENOSPC, "no space left on device", "free space"),
    (errno.EACCES, "permission denied", "make the output folder writable again"),
    (errno.EROFS, "read-only file system", "make the output folder writable again"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for i in range(NUM_IMAGES):
        random_image(40 + 4 * i, 30, seed=i).save(folder / f"img{i}.png")
    return folder


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> Path:
    """The output folder of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "out"
    ground([folder], PHRASES, out_dir=out, model=BoxPerPhrase(), config=CONFIG)
    return out


def _outputs(out: Path) -> dict[str, bytes | None]:
    """The run's files by relative path: the bytes of the journal, annotations.json and
    results.json; crops and overlays by name only (those re-written on resume are drawn from the
    journal's boxes, rounded to 0.01 pixel)."""
    documents = {"journal.jsonl", "annotations.json", "results.json"}
    return {
        p.relative_to(out).as_posix(): p.read_bytes() if p.name in documents else None
        for p in out.rglob("*")
        if p.is_file() and p.name not in ("run.json", "run-key.json", ".vgtool.lock")
    }


def _check_journal_lines(out: Path) -> int:
    """Every line of the journal is one whole JSON record; returns their number."""
    data = (out / "journal.jsonl").read_bytes()
    lines = data.split(b"\n")
    assert lines[-1] == b"" or not data, "a cut-off last line"
    for line in lines[:-1]:
        json.loads(line)
    return len(lines) - 1


def _resume_and_compare(folder: Path, out: Path, reference: Path) -> None:
    fake = BoxPerPhrase()
    summary = ground([folder], PHRASES, out_dir=out, model=fake, config=CONFIG)
    assert summary.resumed + summary.grounded == NUM_IMAGES and fake.predicted_images == summary.grounded
    assert _outputs(out) == _outputs(reference)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM ends a Windows process outright")
def test_sigterm_stops_after_the_batch_and_puts_the_callers_handler_back(folder, reference, tmp_path):
    out = tmp_path / "out"
    finished = []

    def progress(count: int) -> None:
        finished.append(count)
        if len(finished) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    def callers_handler(signum, frame):  # the library's caller has its own
        raise AssertionError("the run's handler should have been in place")

    previous = signal.signal(signal.SIGTERM, callers_handler)
    try:
        with pytest.raises(Terminated):
            ground([folder], PHRASES, out_dir=out, model=BoxPerPhrase(), config=CONFIG, progress=progress)
        assert signal.getsignal(signal.SIGTERM) is callers_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert isinstance(Terminated(), KeyboardInterrupt)
    assert _check_journal_lines(out) == sum(finished) == 4
    assert not (out / "annotations.json").exists()
    assert len(list((out / "overlays").iterdir())) == 4  # the queued writes were finished
    OutputLock(out).acquire().release()
    _resume_and_compare(folder, out, reference)


class DiskFillsUp:
    """A journal's file handle on a disk that has room for ``room`` more lines: the next one is cut
    in half, and every write or flush after that fails with ENOSPC (naming no file, as a real
    ``write`` does)."""

    def __init__(self, handle, room: int):
        self.handle, self.room, self.full = handle, room, False

    def _fail(self):
        self.full = True
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write(self, text: str) -> int:
        if self.full or self.room == 0:
            if not self.full:
                self.handle.write(text[: len(text) // 2])
                self.handle.flush()
            self._fail()
        self.room -= 1
        return self.handle.write(text)

    def flush(self) -> None:
        if self.full:
            self._fail()
        self.handle.flush()

    def fileno(self) -> int:
        return self.handle.fileno()

    @property
    def closed(self) -> bool:
        return self.handle.closed

    def close(self) -> None:
        self.handle.close()


def test_a_full_disk_at_the_journal_stops_the_run_in_one_line(folder, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    opened = Journal.__init__

    def on_a_filling_disk(self, path):
        opened(self, path)
        self._handle = DiskFillsUp(self._handle, room=3)

    monkeypatch.setattr(Journal, "__init__", on_a_filling_disk)
    with pytest.raises(OutputWriteError) as stopped:
        ground([folder], PHRASES, out_dir=out, model=BoxPerPhrase(), config=CONFIG)
    monkeypatch.undo()
    assert str(stopped.value) == (
        f"{out / 'journal.jsonl'}: no space left on device; finished images are kept in the journal; "
        "free space and re-run the same command"
    )
    assert not (out / "journal.jsonl").read_bytes().endswith(b"\n")  # half a line, as a full disk leaves
    assert len(list(read_journal(out / "journal.jsonl"))) == 3
    assert not (out / "annotations.json").exists()
    _resume_and_compare(folder, out, reference)  # the half line is dropped, its image grounded again
    _check_journal_lines(out)


@pytest.mark.parametrize(("code", "what", "remedy"), FAILURES, ids=["ENOSPC", "EACCES", "EROFS"])
def test_a_failed_crop_or_overlay_write_stops_the_run_in_one_line(
    folder, reference, tmp_path, monkeypatch, code, what, remedy
):
    out = tmp_path / "out"
    save, saved, lock = Image.Image.save, [], threading.Lock()

    def save_until_the_disk_fails(image, fp, *args, **kwargs):  # runs on the writer threads
        with lock:
            saved.append(1)
            if len(saved) > 10:
                raise OSError(code, os.strerror(code))
        return save(image, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_until_the_disk_fails)
    with pytest.raises(OutputWriteError) as stopped:
        ground([folder], PHRASES, out_dir=out, model=BoxPerPhrase(), config=CONFIG)
    monkeypatch.undo()
    message = str(stopped.value)
    assert message.startswith(str(out)) and "\n" not in message
    assert message.split(": ", 1)[1] == (
        f"{what}; finished images are kept in the journal; {remedy} and re-run the same command"
    )
    assert Path(message.split(": ", 1)[0]).parent.parent.name in ("crops", "out")  # the file it failed on
    assert 0 < _check_journal_lines(out) <= NUM_IMAGES
    assert not [p for p in out.rglob("*.tmp")]  # no half-written files left
    _resume_and_compare(folder, out, reference)  # lost crops and overlays are re-written


def test_the_cli_says_it_in_one_line(folder, tmp_path, monkeypatch, capsys, tiny_checkpoint):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", no_space)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "ground",
                str(folder),
                "-p",
                "dog",
                "--model",
                str(tiny_checkpoint),
                "--out",
                str(out),
                "--quiet",
                "--workers",
                "0",
            ]
        )
    assert exit_.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}/"), lines
    assert lines[0].endswith(
        ": no space left on device; finished images are kept in the journal; free space and re-run the same command"
    )


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_real_enospc_names_the_journal(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, journal._handle.fileno())
    finally:
        os.close(full)
    journal.append({"image_id": 1})
    with pytest.raises(OSError) as failed:
        journal.close()
    assert failed.value.errno == errno.ENOSPC and failed.value.filename == str(tmp_path / "journal.jsonl")
    assert journal._handle.closed


@pytest.mark.parametrize(
    ("content", "kept"),
    [
        (b"", b""),
        (b'{"a":1}\n', b'{"a":1}\n'),
        (b'{"a":1}\n{"b":', b'{"a":1}\n'),
        (b'{"a":', b""),
        (b'{"a":1}\n' + b"x" * 200_000, b'{"a":1}\n'),  # the cut line spans several read chunks
        (b"x" * 200_000, b""),
    ],
    ids=["empty", "whole", "cut", "only-cut", "long-cut", "long-only-cut"],
)
def test_reopening_a_journal_drops_a_cut_last_line(tmp_path, content, kept):
    path = tmp_path / "journal.jsonl"
    path.write_bytes(content)
    Journal(path).close()
    assert path.read_bytes() == kept


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (OSError(errno.ENOSPC, "No space left", "/o/crops/a.jpg"), "/o/crops/a.jpg: no space left on device"),
        (
            OSError(errno.EDQUOT, "Quota"),
            "/o: disk quota exceeded; finished images are kept in the journal; free",
        ),
        (OSError(errno.EACCES, "Denied", "/o/x"), "/o/x: permission denied; "),
        (OSError(errno.ENOENT, "No such file", "/o/x"), None),
        (OSError("disk full"), None),
    ],
    ids=["enospc", "edquot-no-path", "eacces", "enoent", "no-errno"],
)
def test_which_errors_are_write_failures(error, message):
    failure = write_failure(error, Path("/o"))
    assert (failure is None) if message is None else str(failure).startswith(message)
