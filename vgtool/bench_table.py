"""The ``vgtool bench`` report as a few lines of text: the stages side by side, one row per runtime."""

from __future__ import annotations

from typing import Any

# (report key, column heading); rates in images/s
_COLUMNS = (
    ("decode_only_images_per_s", "decode"),
    ("model_only_images_per_s", "model"),
    ("writing_only_images_per_s", "writing"),
    ("stages_in_series_images_per_s", "in series"),
    ("end_to_end_images_per_s", "end to end"),
    ("slowest_stage", "slowest"),
    ("end_to_end_vs_slowest", "e2e/slowest"),
    ("ratio", "e2e/model"),
)
_STAGE_NAMES = {"decode_only": "decode", "model_only": "model", "writing_only": "writing"}


def _cell(key: str, value: Any) -> str:
    if key == "slowest_stage":
        return _STAGE_NAMES.get(value, str(value))
    if key.endswith("_images_per_s"):
        return f"{value:.1f}"
    return f"{value:.2f}"


def stage_table(report: dict[str, Any]) -> str:
    """The stages' images/s side by side, the rate they would have one after another, end to end,
    the slowest stage and end to end over it and over the model; one row per runtime."""
    header = ["images/s", *(title for _, title in _COLUMNS)]
    rows = [header] + [
        [name, *(_cell(key, figures[key]) for key, _ in _COLUMNS)]
        for name, figures in report["runtimes"].items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def format_report(report: dict[str, Any]) -> str:
    """The report for a terminal: the setting, :func:`stage_table`, then phrase scaling, memory and
    the first runtime's time per end-to-end stage (the JSON report has everything)."""
    workers = report["num_workers"]
    lines = [
        f"{report['model']} on {report['device']} ({report['cpu_count']} cores"
        f"{', bf16' if report['bf16'] else ''}): {report['images']} images, {report['phrases']} phrases, "
        f"batch {report['batch_size']}, {workers} decoding worker{'s' if workers != 1 else ''}, "
        f"best of {report['repeats']} rounds",
        "",
        stage_table(report),
        "",
    ]
    for name, figures in report["runtimes"].items():
        ms = {k: 1000 * v for k, v in figures["phrase_scaling_s_per_image"].items()}
        lines.append(
            f"{name}: model only, 1 / 4 / 16 phrases: {ms['1']:.1f} / {ms['4']:.1f} / {ms['16']:.1f} ms "
            f"per image (16/1: {figures['phrase_scaling_16_over_1']:.2f})"
        )
    stages = ", ".join(
        f"{k} {v:.2f}" for k, v in report["stages_s"].items() if k not in ("load_model", "total")
    )
    lines.append(f"{report['runtime']}: fastest end-to-end run, seconds per stage: {stages}")
    peak = report["peak_rss_mib"]
    worker = "" if peak["workers"] is None else f", largest decoding worker {peak['workers']:.0f} MiB"
    lines.append(f"peak RSS: main {peak['main']:.0f} MiB{worker}")
    scaling = report.get("memory_scaling")
    if scaling is not None:
        runs = ", ".join(
            f"{count} images {run['main']:.0f} MiB" for count, run in scaling["peak_rss_mib"].items()
        )
        lines.append(f"peak RSS of separate runs: {runs} (growth {100 * scaling['growth_main']:+.1f}%)")
    baseline = report.get("baseline_pipeline")
    if baseline is not None:
        lines.append(
            f"transformers pipeline: {baseline['error']}"
            if "error" in baseline
            else f"transformers pipeline: {baseline['images_per_s']:.2f} images/s; vgtool end to end "
            f"{baseline['end_to_end_speedup']:.2f}x, model only {baseline['model_only_speedup']:.2f}x"
        )
    return "\n".join(lines)
