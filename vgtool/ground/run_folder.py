"""What marks a folder as the output folder of a grounding run.

Standard library only: the image listing uses it (so that no run reads another run's outputs as
images) and so do the CLI's checks, before torch is imported.
"""

from __future__ import annotations

from pathlib import Path

JOURNAL_NAME = "journal.jsonl"
RUN_KEY_NAME = "run-key.json"


def is_run_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a run: its run key and its journal."""
    folder = Path(folder)
    return (folder / RUN_KEY_NAME).is_file() and (folder / JOURNAL_NAME).is_file()
