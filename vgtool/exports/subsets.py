"""The train/val split of an export: a seeded draw over the exported images, reproducible."""

from __future__ import annotations

import random
from collections.abc import Iterable

TRAIN, VAL = "train", "val"


def assign_subsets(file_names: Iterable[str], *, val_fraction: float, seed: int) -> dict[str, str]:
    """Each file name -> ``train`` or ``val``.

    ``round(n * val_fraction)`` images go to ``val``, drawn with ``random.Random(seed)`` from the
    sorted names; with a fraction above 0 and at least two images, each subset gets one or more.
    With 0 everything is ``train``.
    """
    names = sorted(set(file_names))
    n_val = round(len(names) * val_fraction)
    if val_fraction > 0 and len(names) >= 2:
        n_val = min(max(n_val, 1), len(names) - 1)
    val = set(random.Random(seed).sample(names, n_val)) if n_val else set()
    return {name: VAL if name in val else TRAIN for name in names}
