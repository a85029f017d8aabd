#!/usr/bin/env python3
"""Check vgtool's Label Studio pre-labels against a real Label Studio server, end to end.

Usage::

    python scripts/check_label_studio.py TASKS_JSON CONFIG_XML --image-root DIR \\
        [--document-root DIR] [--venv PATH] [--port P] [--keep-server] [--report OUT.json]

``TASKS_JSON`` is the task list vgtool writes for Label Studio, ``CONFIG_XML`` the labeling
config written next to it, ``--image-root`` the folder that the tasks' ``data.file_name`` values
are relative to. The script needs only the standard library; Label Studio itself is installed
into a separate virtual environment, never into the project's.

What it does:

1. Creates (or reuses) a virtual environment (default ``~/.cache/vgtool/label-studio-venv``) and
   installs ``label-studio==1.23.2`` there with pip (about a minute from a nearby index, longer over a slow link).
2. Starts ``label-studio start`` on 127.0.0.1 (a free port unless ``--port``), with its data in a
   temporary folder, local-file serving enabled with ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` =
   ``--document-root`` (default: ``--image-root``), and a generated user and API token
   (``LABEL_STUDIO_USERNAME`` / ``LABEL_STUDIO_PASSWORD`` / ``LABEL_STUDIO_USER_TOKEN`` plus
   ``--enable-legacy-api-token``, so that ``Authorization: Token <t>`` works; Label Studio 1.23
   turns legacy tokens off for new organisations otherwise). Waits for ``/health/``.
3. Creates a project with the config, registers a local-files storage (see below), imports the
   tasks (``POST /api/projects/{id}/import``), reads every task back (``GET /api/tasks/{id}``) and
   checks that data (image, file_name, phrases ...), prediction model_version and score, region
   score, rectangle geometry (within 1e-6), labels, the per-region phrase (textarea result with the
   rectangle's id) and ``meta`` survive. Fetches the images through their
   ``/data/local-files/?d=...`` URLs and compares the bytes with the files on disk.
4. Plays an annotator on the first task: an annotation made from its prediction with one box
   moved, one phrase edited and (when there are two or more regions) one region deleted. Scores
   are dropped and the edited region's ``meta.text`` is left at the predicted phrase (the textarea
   holds the corrected one), so a reader must prefer the textarea. Then exports the project:
   ``labelstudio_export.json`` (``GET /api/projects/{id}/export?exportType=JSON&download_all_tasks=true``;
   predictions appear there as ids only, the annotation carries its parent prediction in full) and
   ``labelstudio_export_snapshot.json`` (export snapshot with predictions in full), both in the
   report's folder, and checks both.
5. Stops the server (its process group: SIGTERM, then SIGKILL) on success, error and Ctrl-C,
   prints a summary and writes ``--report`` (versions, counts, per-check pass/fail, timings, the
   server log is copied next to it). Exit status 0 only when every check passes.

Local files: Label Studio 1.23 serves ``/data/local-files/?d=<path>`` (``<path>`` relative to the
document root) only when the file's folder lies inside a local-files storage of a project the user
can see, and it refuses a storage whose path equals the document root. So with the document root
equal to the image root, images in subfolders are served (one storage per top-level subfolder is
registered) but images directly in the image root get 404. With ``--document-root`` set to a
folder above the image root, one storage at the image root is registered and every image is served,
provided the task URLs are relative to that document root
(``d=<image root relative to document root>/<file_name>``).

Options:

``--venv PATH``           virtual environment for Label Studio (created when missing).
``--label-studio-version`` version to install (default 1.23.2).
``--port P``              server port (default: a free one).
``--document-root DIR``   LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: the image root).
``--keep-server``         after the checks, keep the server up (URL and login are printed) until Ctrl-C.
``--report OUT.json``     report path; exports and the server log go to its folder (default: a new
                          temporary folder, printed at the end).
``--startup-timeout S``   seconds to wait for the server (default 300).
``--max-image-fetches N`` images fetched through the server at most (default 50).

Example::

    python scripts/check_label_studio.py runs/x/labelstudio/tasks.json runs/x/labelstudio/config.xml \\
        --image-root examples/images --report /tmp/ls-check/report.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_VENV = Path.home() / ".cache" / "vgtool" / "label-studio-venv"
DEFAULT_LS_VERSION = "1.23.2"
GEOMETRY_KEYS = ("x", "y", "width", "height", "rotation")
GEOMETRY_TOL = 1e-6
SCORE_TOL = 1e-9
HTTP_TIMEOUT = 120


def log(msg: str) -> None:
    print(f"[check-label-studio] {msg}", flush=True)


class CheckFailed(Exception):
    """A step that later steps depend on went wrong."""


# --------------------------------------------------------------------------- checks bookkeeping


class Checks:
    """Per-check counters: how many things were compared and which of them differed."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def _get(self, name: str) -> dict[str, Any]:
        return self.items.setdefault(name, {"compared": 0, "failed": 0, "details": []})

    def record(self, name: str, ok: bool, detail: str | None = None) -> None:
        item = self._get(name)
        item["compared"] += 1
        if not ok:
            item["failed"] += 1
            if detail and len(item["details"]) < 20:
                item["details"].append(detail)

    def declare(self, name: str) -> None:
        self._get(name)

    def fail(self, name: str, detail: str) -> None:
        self.record(name, False, detail)

    def status(self, name: str) -> str:
        item = self.items[name]
        if item["failed"]:
            return "fail"
        return "pass" if item["compared"] else "skipped"

    def all_passed(self) -> bool:
        return all(self.status(n) != "fail" for n in self.items)

    def as_report(self) -> dict[str, Any]:
        return {n: {"status": self.status(n), **v} for n, v in self.items.items()}


# --------------------------------------------------------------------------- HTTP


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self.token = token

    def request(
        self, method: str, path: str, body: Any = None, *, auth: bool = True, raw: bool = False
    ) -> tuple[int, Any]:
        url = path if path.startswith("http") else self.base + path
        data = None
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Token {self.token}"
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, payload = e.code, e.read()
        if raw:
            return status, payload
        try:
            return status, json.loads(payload) if payload else None
        except ValueError:
            return status, payload.decode(errors="replace")

    def expect(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        status, payload = self.request(method, path, body)
        if status not in ok:
            raise CheckFailed(f"{method} {path} -> HTTP {status}: {str(payload)[:800]}")
        return payload


# --------------------------------------------------------------------------- venv + server


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def installed_version(venv: Path) -> str | None:
    py = venv_python(venv)
    if not py.exists():
        return None
    code = "import importlib.metadata as m; print(m.version('label-studio'))"
    res = subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=False)
    return res.stdout.strip() if res.returncode == 0 else None


def ensure_venv(venv: Path, version: str) -> tuple[str, float, bool]:
    """Returns (installed version, seconds spent, whether pip ran)."""
    t0 = time.monotonic()
    have = installed_version(venv)
    if have == version:
        log(f"reusing {venv} (label-studio {have})")
        return have, time.monotonic() - t0, False
    if not venv_python(venv).exists():
        log(f"creating virtual environment {venv}")
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log(f"installing label-studio=={version} into {venv} (takes a few minutes) ...")
    subprocess.run(
        [str(venv_python(venv)), "-m", "pip", "install", "--progress-bar", "off", f"label-studio=={version}"],
        check=True,
    )
    have = installed_version(venv)
    if have != version:
        raise CheckFailed(f"label-studio {version} not importable in {venv} after install (found {have})")
    return have, time.monotonic() - t0, True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, venv: Path, port: int, data_dir: Path, document_root: Path) -> None:
        self.venv = venv
        self.port = port
        self.data_dir = data_dir
        self.document_root = document_root
        self.username = "vgtool-check@example.com"
        self.password = secrets.token_urlsafe(12)
        self.token = secrets.token_hex(20)
        self.log_path = data_dir / "label-studio.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "HEARTEX_"))}
        for k in ("DATABASE_NAME", "DJANGO_DB", "USERNAME", "PASSWORD", "USER_TOKEN", "PORT", "HOST"):
            env.pop(k, None)
        env.update(
            {
                "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
                "LABEL_STUDIO_USERNAME": self.username,
                "LABEL_STUDIO_PASSWORD": self.password,
                "LABEL_STUDIO_USER_TOKEN": self.token,
                "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
                "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        exe = self.venv / ("Scripts/label-studio.exe" if os.name == "nt" else "bin/label-studio")
        cmd = [
            str(exe),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--enable-legacy-api-token",
        ]
        log(f"starting Label Studio on {self.url} (data dir {self.data_dir})")
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(self.data_dir),
                env=env,
                start_new_session=True,
            )

    def _log_tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        t0 = time.monotonic()
        last_note = t0
        while True:
            if self.proc.poll() is not None:
                raise CheckFailed(f"Label Studio exited with {self.proc.returncode}:\n{self._log_tail()}")
            text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            if "is in use" in text and "Trying to start at" in text:
                moved = text.rsplit("Trying to start at", 1)[1].split()[0].strip(".")
                if moved.isdigit() and int(moved) != self.port:
                    log(f"port {self.port} was taken; Label Studio moved to {moved}")
                    self.port = int(moved)
            try:
                with urllib.request.urlopen(self.url + "/health/", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            now = time.monotonic()
            if now - t0 > timeout:
                raise CheckFailed(f"Label Studio not up after {timeout:.0f}s:\n{self._log_tail()}")
            if now - last_note >= 15:
                last_line = (self._log_tail(1) or "").strip()[:120]
                log(f"waiting for {self.url}/health/ ... {now - t0:.0f}s (log: {last_line})")
                last_note = now
            time.sleep(2)

    def stop(self, grace: float = 20.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        pgid = proc.pid  # start_new_session: the server leads its own process group
        log(f"stopping Label Studio (process group {pgid})")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log("no exit after SIGTERM; sending SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=10)
        # children that outlived the leader
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


# --------------------------------------------------------------------------- comparisons


def num_close(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)
    return False


def same(a: Any, b: Any, tol: float = GEOMETRY_TOL) -> bool:
    """Deep equality with numbers compared within tol; extra keys in b are allowed."""
    if isinstance(a, dict):
        return isinstance(b, dict) and all(k in b and same(v, b[k], tol) for k, v in a.items())
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(same(x, y, tol) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return num_close(a, b, tol)
    return a == b


def item_key(item: dict[str, Any]) -> tuple[Any, Any, Any]:
    return item.get("id"), item.get("from_name"), item.get("type")


def match_items(sent: list[dict], got: list[dict]) -> list[tuple[dict, dict | None]]:
    pool: dict[tuple, list[dict]] = {}
    for g in got:
        pool.setdefault(item_key(g), []).append(g)
    return [(s, pool[item_key(s)].pop(0) if pool.get(item_key(s)) else None) for s in sent]


def compare_result(checks: Checks, where: str, sent: list[dict], got: list[dict], *, scores: bool) -> None:
    """Region-level checks shared by predictions and annotations."""
    checks.record(
        "result.item_count", len(sent) == len(got), f"{where}: sent {len(sent)} items, got {len(got)}"
    )
    got_by_id: dict[Any, list[dict]] = {}
    for g in got:
        got_by_id.setdefault(g.get("id"), []).append(g)
    for s, g in match_items(sent, got):
        w = f"{where} region {s.get('id')!r} ({s.get('type')})"
        if g is None:
            checks.fail("result.item_present", f"{w}: missing after round trip")
            continue
        checks.record("result.item_present", True)
        for k in ("to_name", "original_width", "original_height", "image_rotation"):
            if k in s:
                checks.record("result.fields", same(s[k], g.get(k)), f"{w}: {k} {s[k]!r} -> {g.get(k)!r}")
        sv, gv = s.get("value", {}), g.get("value", {})
        geo = [k for k in GEOMETRY_KEYS if k in sv]
        if geo:
            ok = all(num_close(sv[k], gv.get(k), GEOMETRY_TOL) for k in geo)
            checks.record("region.geometry", ok, f"{w}: {[sv[k] for k in geo]} -> {[gv.get(k) for k in geo]}")
        if "rectanglelabels" in sv:
            checks.record(
                "region.labels",
                sv["rectanglelabels"] == gv.get("rectanglelabels"),
                f"{w}: {sv['rectanglelabels']!r} -> {gv.get('rectanglelabels')!r}",
            )
        if scores and "score" in s:
            checks.record(
                "region.score",
                num_close(s["score"], g.get("score"), SCORE_TOL),
                f"{w}: score {s['score']!r} -> {g.get('score')!r}",
            )
        if "meta" in s:
            checks.record(
                "region.meta", same(s["meta"], g.get("meta")), f"{w}: meta {s['meta']!r} -> {g.get('meta')!r}"
            )
        other = {k: v for k, v in s.items() if k not in ("value", "score", "meta")}
        checks.record("result.item_other_fields", same(other, g), f"{w}: {other!r} -> {g!r}")
        checks.record("result.item_exact", same(s, g), f"{w}: {s!r} -> {g!r}")
    # per-region phrase: textarea result carrying the rectangle's id
    for s in sent:
        if s.get("type") != "rectanglelabels":
            continue
        rid = s.get("id")
        sent_text = [x for x in sent if x.get("id") == rid and x.get("type") == "textarea"]
        got_text = [x for x in got_by_id.get(rid, []) if x.get("type") == "textarea"]
        if not sent_text:
            continue
        want = sent_text[0].get("value", {}).get("text")
        have = got_text[0].get("value", {}).get("text") if got_text else None
        checks.record(
            "region.phrase_textarea", want == have, f"{where} region {rid!r}: phrase {want!r} -> {have!r}"
        )
        if "meta" in s and "text" in s["meta"]:
            g_rect = [x for x in got_by_id.get(rid, []) if x.get("type") == "rectanglelabels"]
            have_meta = g_rect[0].get("meta", {}).get("text") if g_rect else None
            checks.record(
                "region.meta_text",
                s["meta"]["text"] == have_meta,
                f"{where} region {rid!r}: meta.text {s['meta']['text']!r} -> {have_meta!r}",
            )


def compare_task(checks: Checks, label: str, sent: dict, got: dict, *, full_predictions: bool = True) -> None:
    sdata, gdata = sent.get("data", {}), got.get("data", {})
    for k, v in sdata.items():
        name = f"data.{k}" if k in ("image", "file_name", "phrases") else "data.other"
        checks.record(
            name, k in gdata and same(v, gdata[k], 0.0), f"{label}: data.{k} {v!r} -> {gdata.get(k)!r}"
        )
    spreds, gpreds = sent.get("predictions", []), got.get("predictions", [])
    checks.record("prediction.count", len(spreds) == len(gpreds), f"{label}: {len(spreds)} -> {len(gpreds)}")
    if not full_predictions:
        return
    for i, (sp, gp) in enumerate(zip(spreds, gpreds, strict=False)):
        where = f"{label} prediction {i}"
        if not isinstance(gp, dict):
            checks.fail("prediction.model_version", f"{where}: came back as {gp!r}, not an object")
            continue
        if "model_version" in sp:
            checks.record(
                "prediction.model_version",
                sp["model_version"] == gp.get("model_version"),
                f"{where}: {sp['model_version']!r} -> {gp.get('model_version')!r}",
            )
        if "score" in sp:
            checks.record(
                "prediction.score",
                num_close(sp["score"], gp.get("score"), SCORE_TOL),
                f"{where}: {sp['score']!r} -> {gp.get('score')!r}",
            )
        compare_result(checks, where, sp.get("result", []), gp.get("result", []), scores=True)


# --------------------------------------------------------------------------- annotator


def simulate_annotation(prediction: dict) -> tuple[list[dict], dict[str, Any]]:
    """An annotator's correction of a prediction: move a box, edit a phrase, delete a region."""
    result = json.loads(json.dumps(prediction.get("result", [])))
    region_ids: list[Any] = []
    for item in result:
        if item.get("type") == "rectanglelabels" and item.get("id") not in region_ids:
            region_ids.append(item.get("id"))
    if not region_ids:
        raise CheckFailed("first task's prediction has no rectanglelabels region to correct")
    moved, edited = region_ids[0], region_ids[0]
    deleted = region_ids[-1] if len(region_ids) >= 2 else None
    changes: dict[str, Any] = {"moved": moved, "edited": edited, "deleted": deleted}
    out = []
    for item in result:
        if deleted is not None and item.get("id") == deleted:
            continue
        item.pop("score", None)  # annotations carry no model score
        item["origin"] = "prediction"
        v = item.get("value", {})
        if item.get("id") == moved and "x" in v:
            dx = 5.0 if v["x"] + v.get("width", 0) + 5.0 <= 100.0 else -min(5.0, v["x"])
            v["x"] = v["x"] + dx
            changes["dx"] = dx
            item["origin"] = "prediction-changed"
        if item.get("id") == edited and item.get("type") == "textarea":
            old = (v.get("text") or [""])[0]
            v["text"] = [f"{old} (edited)".strip()]
            changes["phrase"] = [old, v["text"][0]]
            item["origin"] = "prediction-changed"
        out.append(item)
    if "phrase" not in changes:
        changes["phrase"] = None  # no per-region textarea to edit
    return out, changes


# --------------------------------------------------------------------------- main flow


def load_tasks(path: Path) -> list[dict]:
    tasks = json.loads(path.read_text())
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, dict) for t in tasks):
        raise CheckFailed(f"{path}: expected a non-empty JSON list of tasks")
    return tasks


def local_file_param(url: str) -> str | None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme or not parsed.path.startswith("/data/local-files"):
        return None
    values = urllib.parse.parse_qs(parsed.query).get("d")
    return values[0] if values else None


def register_storages(
    api: Api, checks: Checks, project: int, tasks: list[dict], image_root: Path, document_root: Path
) -> list[str]:
    if image_root != document_root:
        paths = [str(image_root)]
    else:
        tops = sorted(
            {
                Path(t["data"]["file_name"]).parts[0]
                for t in tasks
                if len(Path(t.get("data", {}).get("file_name", "")).parts) > 1
            }
        )
        paths = [str(image_root / top) for top in tops]
        root_level = sum(1 for t in tasks if len(Path(t.get("data", {}).get("file_name", "x")).parts) == 1)
        if root_level:
            log(
                f"note: {root_level} task(s) have images directly in the document root; Label Studio "
                "cannot serve those (a storage may not be the document root itself)"
            )
    for i, p in enumerate(paths):
        status, payload = api.request(
            "POST",
            "/api/storages/localfiles",
            {"project": project, "path": p, "title": f"vgtool images {i}", "use_blob_urls": True},
        )
        checks.record("storage.register", status in (200, 201), f"{p}: HTTP {status} {str(payload)[:300]}")
    return paths


def import_tasks(api: Api, project: int, tasks: list[dict]) -> tuple[dict, list[int]]:
    payload = api.expect("POST", f"/api/projects/{project}/import?return_task_ids=true", tasks)
    if isinstance(payload, dict) and "import" in payload and "task_count" not in payload:
        import_id = payload["import"]  # asynchronous import (not the Community edition default)
        for _ in range(300):
            payload = api.expect("GET", f"/api/projects/{project}/imports/{import_id}")
            if payload.get("status") in ("completed", "failed"):
                break
            time.sleep(1)
        if payload.get("status") != "completed":
            raise CheckFailed(f"import {import_id} did not complete: {str(payload)[:800]}")
    ids = payload.get("task_ids") or []
    if not ids:
        listing = api.expect("GET", f"/api/tasks?project={project}&page_size=100000&fields=task_only")
        ids = sorted(t["id"] for t in (listing.get("tasks", []) if isinstance(listing, dict) else listing))
    return payload, list(ids)


def pair_tasks(sent: list[dict], got: list[dict]) -> list[tuple[dict, dict | None]]:
    """Pairs by data.file_name when unique, else by order."""
    names = [t.get("data", {}).get("file_name") for t in sent]
    if None not in names and len(set(names)) == len(names):
        by_name = {g.get("data", {}).get("file_name"): g for g in got}
        return [(s, by_name.get(n)) for s, n in zip(sent, names, strict=True)]
    return [(s, got[i] if i < len(got) else None) for i, s in enumerate(sent)]


def run_checks(
    args: argparse.Namespace,
    api: Api,
    checks: Checks,
    tasks: list[dict],
    out_dir: Path,
    report: dict[str, Any],
) -> None:
    image_root, document_root = args.image_root, args.document_root
    for name in (
        "data.image",
        "data.file_name",
        "data.phrases",
        "prediction.model_version",
        "prediction.score",
        "region.score",
        "region.geometry",
        "region.labels",
        "region.phrase_textarea",
        "region.meta_text",
        "local_file.fetch",
    ):
        checks.declare(name)

    version = api.expect("GET", "/api/version")
    report["versions"]["label_studio_server"] = version.get("release") if isinstance(version, dict) else None
    checks.record("auth.token", True)

    config = args.config_xml.read_text()
    project = api.expect("POST", "/api/projects", {"title": "vgtool pre-label check", "label_config": config})
    pid = project["id"]
    returned = project.get("label_config") or ""
    checks.record(
        "project.label_config",
        _same_xml(returned, config),
        f"label_config came back different: {returned!r}",
    )
    report["project_id"] = pid

    report["storages"] = register_storages(api, checks, pid, tasks, image_root, document_root)

    t0 = time.monotonic()
    summary, ids = import_tasks(api, pid, tasks)
    report["timings_s"]["import"] = round(time.monotonic() - t0, 3)
    n_preds = sum(len(t.get("predictions", [])) for t in tasks)
    checks.record(
        "import.task_count",
        summary.get("task_count") == len(tasks),
        f"sent {len(tasks)}, server says {summary.get('task_count')}",
    )
    checks.record(
        "import.prediction_count",
        summary.get("prediction_count") == n_preds,
        f"sent {n_preds}, server says {summary.get('prediction_count')}",
    )
    report["import_response"] = {k: v for k, v in summary.items() if k != "task_ids"}

    got = [api.expect("GET", f"/api/tasks/{i}") for i in ids]
    pairs = pair_tasks(tasks, got)
    for n, (s, g) in enumerate(pairs):
        label = f"task {n} ({s.get('data', {}).get('file_name')})"
        if g is None:
            checks.fail("task.present", f"{label}: not found after import")
            continue
        checks.record("task.present", True)
        compare_task(checks, f"api {label}", s, g)

    # images through the local-files URL
    fetched = 0
    for _s, g in pairs:
        if fetched >= args.max_image_fetches or g is None:
            break
        url, fname = g.get("data", {}).get("image"), g.get("data", {}).get("file_name")
        if not isinstance(url, str) or not fname:
            continue
        d = local_file_param(url)
        if d is None:
            continue
        disk = image_root / fname
        checks.record(
            "local_file.url_points_at_file_name",
            (document_root / d).resolve() == disk.resolve(),
            f"{url}: d={d!r} resolves to {document_root / d}, file_name is {disk}",
        )
        status, body = api.request("GET", url, raw=True)
        fetched += 1
        want = disk.read_bytes() if disk.is_file() else None
        checks.record(
            "local_file.fetch",
            status == 200 and body == want,
            f"{url}: HTTP {status}, {len(body)} bytes; on disk "
            f"{'missing' if want is None else f'{len(want)} bytes'} at {disk}",
        )
    report["counts"]["images_fetched"] = fetched

    # annotator on the first task
    first_got = pairs[0][1]
    if first_got is None or not first_got.get("predictions"):
        raise CheckFailed("first task has no prediction to correct")
    pred = first_got["predictions"][0]
    result, changes = simulate_annotation(pred)
    body = {
        "result": result,
        "parent_prediction": pred.get("id"),
        "lead_time": 12.5,
        "was_cancelled": False,
        "ground_truth": False,
    }
    ann = api.expect("POST", f"/api/tasks/{first_got['id']}/annotations", body)
    report["annotation"] = {"task_id": first_got["id"], "annotation_id": ann.get("id"), "changes": changes}
    stored = api.expect("GET", f"/api/annotations/{ann['id']}")
    checks.record(
        "annotation.roundtrip",
        same(result, stored.get("result")),
        f"sent {result!r} -> {stored.get('result')!r}",
    )

    # export, as a client downloads it
    status, raw = api.request(
        "GET", f"/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true", raw=True
    )
    export_path = out_dir / "labelstudio_export.json"
    checks.record("export.json", status == 200, f"HTTP {status}: {raw[:300]!r}")
    if status == 200:
        export_path.write_bytes(raw)
        report["exports"]["json"] = str(export_path)
        check_export(
            checks, "export", json.loads(raw), tasks, first_got["id"], result, full_predictions=False
        )

    # export snapshot with full predictions
    snap = api.expect(
        "POST",
        f"/api/projects/{pid}/exports",
        {"title": "vgtool check", "serialization_options": {"predictions": {"only_id": False}}},
    )
    for _ in range(120):
        if snap.get("status") in ("completed", "failed"):
            break
        time.sleep(1)
        snap = api.expect("GET", f"/api/projects/{pid}/exports/{snap['id']}")
    status, raw = api.request(
        "GET", f"/api/projects/{pid}/exports/{snap['id']}/download?exportType=JSON", raw=True
    )
    checks.record(
        "export.snapshot", status == 200, f"snapshot {snap.get('status')}: HTTP {status} {raw[:300]!r}"
    )
    if status == 200:
        snap_path = out_dir / "labelstudio_export_snapshot.json"
        snap_path.write_bytes(raw)
        report["exports"]["snapshot"] = str(snap_path)
        check_export(
            checks, "snapshot", json.loads(raw), tasks, first_got["id"], result, full_predictions=True
        )


def check_export(
    checks: Checks,
    label: str,
    exported: list[dict],
    tasks: list[dict],
    annotated_id: int,
    ann_result: list[dict],
    *,
    full_predictions: bool,
) -> None:
    checks.record(
        f"{label}.task_count", len(exported) == len(tasks), f"{len(tasks)} sent, {len(exported)} exported"
    )
    for n, (s, g) in enumerate(pair_tasks(tasks, exported)):
        if g is None:
            checks.fail(f"{label}.task_count", f"task {n} missing from the export")
            continue
        compare_task(checks, f"{label} task {n}", s, g, full_predictions=full_predictions)
        anns = g.get("annotations", [])
        if g.get("id") == annotated_id:
            ok = len(anns) == 1 and same(ann_result, anns[0].get("result"))
            checks.record(f"{label}.annotation", ok, f"task {n}: annotations {anns!r}")
            if len(anns) == 1:
                # the quick export embeds the parent prediction of each annotation in full
                pp = anns[0].get("prediction")
                if isinstance(pp, dict) and pp.get("result") is not None:
                    sp = s.get("predictions", [{}])[0]
                    compare_result(
                        checks,
                        f"{label} task {n} annotation.prediction",
                        sp.get("result", []),
                        pp.get("result", []),
                        scores=True,
                    )
        else:
            checks.record(f"{label}.annotation", not anns, f"task {n}: unexpected annotations {anns!r}")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _same_xml(a: str, b: str) -> bool:
    """The same XML up to layout (Label Studio may re-indent a config it stores)."""
    from xml.etree.ElementTree import ParseError, canonicalize

    try:
        return canonicalize(a, strip_text=True) == canonicalize(b, strip_text=True)
    except ParseError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tasks_json", type=Path)
    p.add_argument("config_xml", type=Path)
    p.add_argument("--image-root", type=Path, required=True)
    p.add_argument("--document-root", type=Path, default=None)
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    p.add_argument("--label-studio-version", default=DEFAULT_LS_VERSION)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--keep-server", action="store_true")
    p.add_argument("--report", type=Path, default=None)
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--max-image-fetches", type=int, default=50)
    args = p.parse_args(argv)

    args.image_root = args.image_root.expanduser().resolve()
    args.document_root = (args.document_root or args.image_root).expanduser().resolve()
    args.venv = args.venv.expanduser().absolute()
    if not args.image_root.is_dir():
        p.error(f"--image-root {args.image_root} is not a folder")
    if args.document_root != args.image_root and args.document_root not in args.image_root.parents:
        p.error("--document-root must be the image root or a folder above it")
    if args.report is not None:
        args.report = args.report.expanduser().absolute()
        out_dir = args.report.parent
        out_dir.mkdir(parents=True, exist_ok=True)
    else:
        out_dir = Path(tempfile.mkdtemp(prefix="vgtool-ls-check-"))

    # SIGTERM behaves like Ctrl-C so that the server is stopped in `finally`
    signal.signal(signal.SIGTERM, _raise_interrupt)

    t_start = time.monotonic()
    checks = Checks()
    report: dict[str, Any] = {
        "ok": False,
        "inputs": {
            "tasks_json": str(args.tasks_json.absolute()),
            "config_xml": str(args.config_xml.absolute()),
            "image_root": str(args.image_root),
            "document_root": str(args.document_root),
        },
        "versions": {
            "python": platform.python_version(),
            "label_studio_requested": args.label_studio_version,
        },
        "counts": {},
        "timings_s": {},
        "exports": {},
        "error": None,
    }
    server: Server | None = None
    data_dir: Path | None = None
    try:
        tasks = load_tasks(args.tasks_json)
        report["counts"].update(
            tasks=len(tasks),
            predictions=sum(len(t.get("predictions", [])) for t in tasks),
            result_items=sum(len(pr.get("result", [])) for t in tasks for pr in t.get("predictions", [])),
            regions=sum(
                1
                for t in tasks
                for pr in t.get("predictions", [])
                for r in pr.get("result", [])
                if r.get("type") == "rectanglelabels"
            ),
        )
        have, secs, ran = ensure_venv(args.venv, args.label_studio_version)
        report["versions"]["label_studio_package"] = have
        report["timings_s"]["venv"] = round(secs, 1)
        report["venv"] = {"path": str(args.venv), "pip_ran": ran}

        data_dir = Path(tempfile.mkdtemp(prefix="vgtool-ls-data-"))
        server = Server(args.venv, args.port or free_port(), data_dir, args.document_root)
        t0 = time.monotonic()
        server.start()
        server.wait_ready(args.startup_timeout)
        report["timings_s"]["server_start"] = round(time.monotonic() - t0, 1)
        report["server"] = {"url": server.url, "pid": server.proc.pid if server.proc else None}
        log(f"Label Studio is up at {server.url} after {report['timings_s']['server_start']}s")

        t0 = time.monotonic()
        run_checks(args, Api(server.url, server.token), checks, tasks, out_dir, report)
        report["timings_s"]["checks"] = round(time.monotonic() - t0, 1)

        if args.keep_server:
            log(
                f"server kept up at {server.url}  login: {server.username} / {server.password}  "
                f"token: {server.token}  - press Ctrl-C to stop it"
            )
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the normal way out here
                while server.proc and server.proc.poll() is None:
                    time.sleep(1)
    except KeyboardInterrupt:
        report["error"] = "interrupted"
        log("interrupted")
    except Exception as e:  # report every failure, the server is stopped below
        report["error"] = f"{type(e).__name__}: {e}"
        if not isinstance(e, CheckFailed):
            report["traceback"] = traceback.format_exc()
        log(f"error: {report['error']}")
    finally:
        if server is not None:
            t0 = time.monotonic()
            try:
                server.stop()
            finally:
                report["timings_s"]["server_stop"] = round(time.monotonic() - t0, 1)
                if server.log_path.exists():
                    shutil.copyfile(server.log_path, out_dir / "label_studio_server.log")
                    report["server_log"] = str(out_dir / "label_studio_server.log")
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)

    report["timings_s"]["total"] = round(time.monotonic() - t_start, 1)
    report["checks"] = checks.as_report()
    report["ok"] = report["error"] is None and checks.all_passed() and bool(checks.items)
    report_path = args.report or out_dir / "report.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n")

    print()
    print(
        f"Label Studio {report['versions'].get('label_studio_server') or report['versions'].get('label_studio_package')}"
        f"  tasks={report['counts'].get('tasks')}  regions={report['counts'].get('regions')}"
        f"  images fetched={report['counts'].get('images_fetched', 0)}"
    )
    print("timings (s): " + ", ".join(f"{k}={v}" for k, v in report["timings_s"].items()))
    for name, item in report["checks"].items():
        print(
            f"  {item['status'].upper():7s} {name}  ({item['compared'] - item['failed']}/{item['compared']})"
        )
        for d in item["details"][:3]:
            print(f"          {d[:300]}")
    if report["error"]:
        print(f"ERROR: {report['error']}")
    for k, v in report["exports"].items():
        print(f"export ({k}): {v}")
    print(f"report: {report_path}")
    print("RESULT: " + ("PASS" if report["ok"] else "FAIL"))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
