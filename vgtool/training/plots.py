"""Loss, learning-rate and validation curves from ``metrics.jsonl``, as one PNG."""

from __future__ import annotations

import json
from pathlib import Path


def plot_curves(metrics_path: Path, out_path: Path) -> Path | None:
    """Draw train loss, learning rate and validation Acc@0.5 against the step."""
    if not metrics_path.exists():
        return None
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    train = [r for r in records if r.get("type") == "train"]
    val = [r for r in records if r.get("type") == "val"]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    steps = [r["step"] for r in train]
    for key in ("loss", "loss_ce", "loss_bbox", "loss_giou", "loss_box", "loss_confidence"):
        if key in train[0]:
            axes[0].plot(steps, [r[key] for r in train], label=key, linewidth=1.2 if key == "loss" else 0.8)
    axes[0].set_yscale("log")
    axes[0].set_title("training loss")
    axes[0].legend(fontsize=8)
    axes[1].plot(steps, [r["lr"] for r in train])
    axes[1].set_title("learning rate (new parts)")
    if val:
        for key in ("acc@0.5", "acc@0.75", "miou"):
            if key in val[0]:
                axes[2].plot([r["step"] for r in val], [r[key] for r in val], marker="o", label=key)
        axes[2].set_ylim(0, 1)
        axes[2].legend(fontsize=8)
    axes[2].set_title("validation")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
