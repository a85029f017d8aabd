"""One writer per output folder: a second run into a held folder is refused at once, naming the
holder; the lock of a process that died does not block; the lock lasts until the run is assembled."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.prediction.test_fake_grounder import BoxPerPhrase
from vgtool.errors import OutputLocked
from vgtool.ground.folder_lock import LOCK_NAME, OutputLock, check_unlocked
from vgtool.ground.pipeline import GroundConfig, ground

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows: no lock is taken")
PHRASES = ["cat", "dog"]
CONFIG = GroundConfig(batch_size=2, num_workers=0, quiet=True)
HOLDER = os.getpid(), socket.gethostname()
# a process that takes the lock of argv[1], says so, and keeps it until its stdin closes
HOLD = (
    "import sys; from vgtool.ground.folder_lock import OutputLock; lock = OutputLock(sys.argv[1]).acquire(); "
    "print('held', flush=True); sys.stdin.read()"
)
# a process that takes the lock and dies without releasing it
DIE = "import os, sys; from vgtool.ground.folder_lock import OutputLock; OutputLock(sys.argv[1]).acquire(); os._exit(0)"
# a process that takes the lock, forks a child that lives on (as a decoding worker), and dies
FORK = (
    "import os, sys, time; from vgtool.ground.folder_lock import OutputLock; OutputLock(sys.argv[1]).acquire()\n"
    "pid = os.fork()\nif pid == 0:\n    os.closerange(0, 3)\n    time.sleep(60)\n    os._exit(0)\n"
    "print(pid, flush=True)\nos._exit(0)"
)
# the CLI in a process of its own; prints whether torch was imported and the exit status
CLI = (
    "import sys; from vgtool.cli.main import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as exit_:\n    print('torch' in sys.modules, exit_.code)"
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    from tests.conftest import random_image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        random_image(32, 24, seed=i).save(folder / f"img{i}.png")
    return folder


def test_a_second_run_is_refused_before_its_model_loads(folder, tmp_path):
    out = tmp_path / "out"
    with OutputLock(out):
        # the model does not exist: the lock is refused first, so the error is the lock's
        with pytest.raises(OutputLocked) as refused:
            ground([folder], PHRASES, out_dir=out, model=tmp_path / "no-model", config=CONFIG)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing else written
    message = str(refused.value)
    assert f"pid {HOLDER[0]} on {HOLDER[1]}, started " in message and "\n" not in message
    assert message.startswith(f"{out}: another vgtool run is writing here")
    assert message.endswith("wait for it to finish or stop it, or use another --out")
    assert ground([folder], PHRASES, out_dir=out, model=BoxPerPhrase(), config=CONFIG).grounded == 4


def test_the_lock_lasts_through_assembly_and_is_released_after(folder, tmp_path, monkeypatch):
    import vgtool.ground.pipeline as pipeline

    out = tmp_path / "out"
    assemble = pipeline.assemble_annotations
    seen = []

    def assemble_while_checking(*args, **kwargs):
        with pytest.raises(OutputLocked):
            OutputLock(out).acquire()
        seen.append(json.loads((out / LOCK_NAME).read_text())["pid"])
        return assemble(*args, **kwargs)

    monkeypatch.setattr(pipeline, "assemble_annotations", assemble_while_checking)
    ground([folder], PHRASES, out_dir=out, model=BoxPerPhrase(), config=CONFIG)
    assert seen == [os.getpid()]
    OutputLock(out).acquire().release()  # free again


def test_a_failed_open_releases_the_lock(folder, tmp_path):
    class Broken(BoxPerPhrase):
        def identity(self):
            raise RuntimeError("no identity")

    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="no identity"):
        ground([folder], PHRASES, out_dir=out, model=Broken(), config=CONFIG)
    OutputLock(out).acquire().release()


def test_the_lock_file_of_a_dead_process_does_not_block(folder, tmp_path):
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-c", DIE, str(out)], check=True)
    dead = json.loads((out / LOCK_NAME).read_text())
    assert dead["pid"] != os.getpid()
    check_unlocked(out)
    summary = ground([folder], PHRASES, out_dir=out, model=BoxPerPhrase(), config=CONFIG)
    assert summary.grounded == 4


def test_a_child_outliving_the_holder_does_not_keep_the_lock(tmp_path):
    out = tmp_path / "out"
    child = int(subprocess.run([sys.executable, "-c", FORK, str(out)], capture_output=True, text=True).stdout)
    try:
        assert os.path.exists(f"/proc/{child}") or sys.platform != "linux"
        check_unlocked(out)
        OutputLock(out).acquire().release()
    finally:
        os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize(
    ("setup", "refused"),
    [("none", False), ("empty-folder", False), ("dead-holder", False), ("live-holder", True)],
)
def test_check_unlocked(tmp_path, setup, refused):
    out = tmp_path / "out"
    if setup == "empty-folder":
        out.mkdir()
    elif setup == "dead-holder":
        subprocess.run([sys.executable, "-c", DIE, str(out)], check=True)
    lock = OutputLock(out).acquire() if setup == "live-holder" else None
    try:
        if refused:
            with pytest.raises(OutputLocked, match=f"pid {os.getpid()} on "):
                check_unlocked(out)
        else:
            check_unlocked(out)
        assert (out / LOCK_NAME).exists() == (setup in ("dead-holder", "live-holder"))  # writes nothing
    finally:
        if lock is not None:
            lock.release()


def test_the_cli_refuses_a_held_folder_in_one_line_without_loading_torch(folder, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ["ground", str(folder), "-p", "dog", "--model", str(tiny_checkpoint), "--out", str(out)]
        result = subprocess.run(
            [sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=60
        )
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert result.stdout.split() == ["False", "1"], result.stderr  # torch never imported, exit 1
    line = f"error: {out}: another vgtool run is writing here (pid {holder.pid} on {socket.gethostname()}, "
    assert result.stderr.startswith(line) and result.stderr.count("\n") == 1, result.stderr
