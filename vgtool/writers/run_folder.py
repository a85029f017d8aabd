"""What marks a folder as the output folder of a grounding run, and where its journals are.

Standard library only: the image listing uses it (so that no run reads another run's outputs as
images) and so do the CLI's checks, before torch is imported.
"""

from __future__ import annotations

from pathlib import Path

JOURNAL_NAME = "journal.jsonl"
# the journals of the ranks of sharded runs: journal.rank<r>-of-<w>.jsonl
RANK_JOURNAL_GLOB = "journal.rank*-of-*.jsonl"
RUN_KEY_NAME = "run-key.json"
# crops of sharded runs wait here for their final names (see vgtool.ground.crop_names)
PENDING_DIR = ".pending"


def journal_paths(folder: str | Path) -> list[Path]:
    """The run's journals: ``journal.jsonl`` first (if there is one), then the ranks' by name.

    Readers take the first record of an image in this order."""
    folder = Path(folder)
    first = [folder / JOURNAL_NAME] if (folder / JOURNAL_NAME).is_file() else []
    return first + sorted(p for p in folder.glob(RANK_JOURNAL_GLOB) if p.is_file())


def is_run_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a run: its run key and its journal (a sharded run writes an empty
    ``journal.jsonl`` beside its ranks' journals)."""
    folder = Path(folder)
    return (folder / RUN_KEY_NAME).is_file() and (folder / JOURNAL_NAME).is_file()
