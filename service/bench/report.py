"""Results files: the machine, a JSON document, a Markdown table and PNG plots (matplotlib, if installed)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["machine", "markdown_table", "plot", "write_results"]

COLUMNS = [
    ("system", "system"),
    ("concurrency", "concurrency"),
    ("rate_rps", "rate (req/s)"),
    ("requests", "requests"),
    ("errors", "errors"),
    ("throughput_audio_s_per_s", "audio-s/s"),
    ("requests_per_s", "req/s"),
    ("p50_ms", "p50 ms"),
    ("p90_ms", "p90 ms"),
    ("p99_ms", "p99 ms"),
    ("ttfb_p50_ms", "TTFB p50 ms"),
    ("mean_batch", "mean batch"),
    ("ttfa_p50_ms", "first audio p50 ms"),
    ("ttfa_p99_ms", "first audio p99 ms"),
    ("stalled_sessions", "stalled sessions"),
    ("stall_s", "stall s"),
    ("server_late_s", "server late s"),
    ("errors_by_close_code", "errors (close code: count)"),
    ("cost_per_million_chars", "$ per M chars"),
]


def machine() -> dict[str, Any]:
    """The machine this runs on: CPU model and cores, GPU if any, torch and transformers versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "gpu": None, "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - the harness can run where torch is absent
        info["torch"] = None
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        info["transformers"] = None
    return info


def _mean_batch(row: dict[str, Any]) -> float | None:
    sizes = row.get("batch_sizes") or {}
    total = sum(sizes.values())
    return round(sum(int(size) * count for size, count in sizes.items()) / total, 2) if total else None


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "–"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (columns with no values at all are left out)."""
    rows = [{**row, "mean_batch": row.get("mean_batch", _mean_batch(row))} for row in rows]
    columns = [(key, title) for key, title in COLUMNS if any(row.get(key) is not None for row in rows)]
    lines = ["| " + " | ".join(title for _, title in columns) + " |"]
    lines.append("|" + "|".join("---" if key == "system" else "---:" for key, _ in columns) + "|")
    lines += ["| " + " | ".join(_cell(row.get(key)) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], out: Path, title: str) -> list[Path]:
    """Throughput and p99 latency against concurrency, one line per system; nothing without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    closed = [r for r in rows if r.get("mode", "closed") == "closed" and r.get("concurrency")]
    if not closed:
        return []  # live or open-loop rows only: nothing to draw against concurrency
    systems = list(dict.fromkeys(r["system"] for r in closed))
    written = []
    for key, label, suffix in (
        ("throughput_audio_s_per_s", "audio seconds per wall second", "throughput"),
        ("p99_ms", "p99 latency (ms)", "p99"),
    ):
        figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
        for system in systems:
            points = sorted((r["concurrency"], r[key]) for r in closed if r["system"] == system and r.get(key))
            if points:
                axes.plot(*zip(*points, strict=True), marker="o", label=system)
        axes.set_xscale("log", base=2)
        axes.set_xlabel("concurrency (raw: batch size)")
        axes.set_ylabel(label)
        axes.set_title(title, fontsize=9)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        path = out.with_name(f"{out.stem}-{suffix}.png")
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written


def write_results(path: Path, document: dict[str, Any]) -> list[Path]:
    """``path`` (JSON), the same name with ``.md`` (table) and ``-throughput.png``/``-p99.png`` (plots)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n")
    rows = document["rows"]
    info = document["machine"]
    where = f"{info['cpu']}, {info['cores']} cores" + (f", {info['gpu']}" if info.get("gpu") else "")
    title = f"{document.get('model', '')} on {where}"
    md = path.with_suffix(".md")
    md.write_text(f"# {document.get('name', path.stem)}\n\n{title}\n\n" + markdown_table(rows))
    return [path, md, *plot(rows, path, title)]
