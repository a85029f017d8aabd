"""The output folder: what a run writes there, and whether an existing folder may be resumed.

A run records its *run key* (the grounder's identity, phrases, categories, postprocessing) in
``run-key.json``. Re-running with the same key resumes from ``journal.jsonl``; a different key is
refused unless ``overwrite`` is set, so outputs of two different runs are never mixed. With
``resume`` the folder must already hold a run with the same key.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from vgtool.atomic import write_bytes_atomic
from vgtool.errors import InputError
from vgtool.ground.merge import MergeConfig
from vgtool.ground.phrases import Ontology
from vgtool.models.postprocess import PostProcessConfig
from vgtool.writers.run_folder import JOURNAL_NAME, PENDING_DIR, RUN_KEY_NAME, journal_paths

RESULTS_NAME = "results.json"
OUTPUTS = (
    "annotations.json",
    RESULTS_NAME,
    "run.json",
    JOURNAL_NAME,
    RUN_KEY_NAME,
    "crops",
    "overlays",
    PENDING_DIR,
)
# Bumped when the records a run writes change, so that a run never resumes into a journal of
# another layout (2: COCO annotations gained segmentation and attributes; categories may be pinned).
OUTPUT_FORMAT = 2
# Run-key fields under the names users know them by (the model's config hash is part of "model").
_KEY_LABELS = {
    "model": "model",
    "model_config": "model",
    "phrases": "phrases",
    "categories": "categories",
    "postprocess": "postprocess",
    "merge": "merge settings",
    "output_format": "vgtool output format",
}


@dataclass(frozen=True)
class RunState:
    """Where a run writes and what it writes under.

    Attributes:
        journal_path: the journal this process appends to (``journal.jsonl``, or a rank's own).
    """

    out_dir: Path
    journal_path: Path
    ontology: Ontology
    run_key: dict

    @property
    def category_names(self) -> dict[int, str]:
        return self.ontology.category_names


def prepare_output_dir(
    out_dir: Path,
    *,
    model_identity: dict[str, str],
    ontology: Ontology,
    postprocess: PostProcessConfig,
    merge: MergeConfig | None,
    overwrite: bool,
    resume: bool = False,
    journal_name: str = JOURNAL_NAME,
    write: bool = True,
) -> RunState:
    """Create or reopen ``out_dir`` for a run.

    Args:
        model_identity: the grounder's :meth:`~vgtool.grounders.base.Grounder.identity`.
        merge: how boxes of several phrases are merged; None when there is nothing to merge.
        overwrite: replace the outputs of an earlier run with other settings.
        resume: require an earlier run with the same settings in ``out_dir``.
        journal_name: the journal this process appends to (a rank of a sharded run has its own).
        write: write the run key (and an empty ``journal.jsonl``, which marks the folder as a
            run's); False for the ranks of a sharded run but rank 0, which find the folder prepared.

    Raises:
        InputError: the folder holds outputs of a run with other settings (and not ``overwrite``),
            ``resume`` finds no earlier run or one with other settings, or it cannot be written.
    """
    run_key = {
        **model_identity,
        "phrases": [[p.text, p.category] for p in ontology.phrases],
        "categories": [[c.id, c.name] for c in ontology.categories],
        "postprocess": asdict(postprocess),
        "merge": None if merge is None else asdict(merge),
        "output_format": OUTPUT_FORMAT,
    }
    key_path = out_dir / RUN_KEY_NAME
    existing = None
    if key_path.exists():
        try:
            existing = json.loads(key_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            existing = {"unreadable": True}
    elif (out_dir / "annotations.json").exists() or (out_dir / JOURNAL_NAME).exists():
        existing = {"unknown": True}
    if resume and existing is None:
        raise InputError(
            f"{out_dir}: no earlier run to resume (no {RUN_KEY_NAME}); drop --resume to start one"
        )
    if not write and existing != run_key:
        raise InputError(f"{out_dir}: rank 0 did not prepare the output folder for this run")
    if existing is not None and existing != run_key:
        differs = [] if "model" not in existing else [k for k in run_key if existing.get(k) != run_key[k]]
        if "phrases" in differs and "categories" in differs:  # new phrases bring new categories
            differs.remove("categories")
        differs = list(dict.fromkeys(_KEY_LABELS.get(k, "model") for k in differs)) or ["settings"]
        if resume:
            raise InputError(f"{out_dir}: cannot resume, the earlier run used different {', '.join(differs)}")
        if not overwrite:
            raise InputError(
                f"{out_dir}: holds the outputs of another run (different {', '.join(differs)}); "
                "use --overwrite to replace them, or another --out"
            )
        for target in [*(out_dir / name for name in OUTPUTS), *journal_paths(out_dir)]:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    if write:
        if existing == run_key:
            remove_stale_temporaries(out_dir)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(key_path, (json.dumps(run_key, indent=2, ensure_ascii=False) + "\n").encode())
            if journal_name != JOURNAL_NAME:
                (out_dir / JOURNAL_NAME).touch()
        except OSError as err:
            raise InputError(f"{out_dir}: cannot write output folder ({err.strerror or err})") from err
    return RunState(out_dir=out_dir, journal_path=out_dir / journal_name, ontology=ontology, run_key=run_key)


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete the half-written ``.<name>.<pid>-<thread>.tmp`` files a killed run left among its crops
    and overlays (see :func:`vgtool.atomic.atomic_open`); returns how many.

    Called while resuming, with the folder locked and before any rank of the run writes, so every
    such file is stale. Only the image folders are walked: the run's own files are rewritten whole.
    """
    removed = 0
    for name in ("crops", "overlays", PENDING_DIR):
        folder = out_dir / name
        if not folder.is_dir():
            continue
        for path in folder.rglob(".*.tmp"):
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed += 1
    return removed
