"""Showing a bench report: the table's rows and the optional chart (matplotlib, imported only here)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from phi3.errors import ConfigError

# -- rendering --------------------------------------------------------------------------------

COLUMNS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("cold_load_s", "COLD LOAD s", lambda v: f"{v:.2f}"),
    ("warm_load_s", "WARM LOAD s", lambda v: f"{v:.2f}"),
    ("first_call_s", "1ST CALL ms", lambda v: f"{v * 1000:.0f}"),
    ("ttft_s", "TTFT ms", lambda v: f"{v * 1000:.0f}"),
    ("decode_tokens_per_s", "DECODE tok/s", lambda v: f"{v:.1f}"),
    ("e2e_tokens_per_s", "E2E tok/s", lambda v: f"{v:.1f}"),
    ("peak_rss_bytes", "PEAK RSS MB", lambda v: f"{v / 1e6:.0f}"),
)


def format_stat(stat: Mapping[str, Any] | None, fmt: Callable[[float], str]) -> str:
    """``median (min-max)``, or ``-``."""
    if not stat:
        return "-"
    if stat["n"] == 1 or stat["min"] == stat["max"]:
        return fmt(stat["median"])
    return f"{fmt(stat['median'])} ({fmt(stat['min'])}-{fmt(stat['max'])})"


def table_rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the results table (one row per measured target)."""
    headers = ["BACKEND/ENGINE", "DEVICE", "PRECISION", *(title for _, title, _ in COLUMNS)]
    rows = []
    for item in report["results"]:
        summary = item["summary"]
        rows.append(
            [
                f"{item['backend']}/{item['engine']}",
                str(item["device"]),
                str(item["precision"]),
                *(format_stat(summary.get(key), fmt) for key, _, fmt in COLUMNS),
            ]
        )
    return headers, rows


def plot_report(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a bar chart (TTFT, decode rate, cold/warm load; whiskers = min-max) to ``path``."""
    plt = import_pyplot()
    items = report["results"]
    if not items:
        raise ConfigError("nothing was measured, so there is nothing to plot")
    labels = [f"{i['backend']}/{i['engine']}\n{i['device']} {i['precision']}" for i in items]
    panels: list[tuple[str, list[tuple[str, float, str | None]]]] = [
        ("Time to first token (ms)", [("ttft_s", 1000.0, None)]),
        ("Decode (tokens/s, higher is better)", [("decode_tokens_per_s", 1.0, None)]),
        ("Load (s)", [("cold_load_s", 1.0, "cold"), ("warm_load_s", 1.0, "warm")]),
    ]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels) + 2.5, 0.55 * len(items) + 2.2), sharey=True, squeeze=False
    )
    positions = list(range(len(items)))
    for ax, (title, series) in zip(axes[0], panels):
        width = 0.8 / len(series)
        for k, (metric, scale, name) in enumerate(series):
            where, medians, low, high = [], [], [], []
            for position, item in zip(positions, items):
                stat = item["summary"].get(metric)
                if not stat:  # not measured (e.g. --no-cold): no bar, rather than a bar at 0
                    continue
                m = stat["median"] * scale
                where.append(position + (k - (len(series) - 1) / 2) * width)
                medians.append(m)
                low.append(m - stat["min"] * scale)
                high.append(stat["max"] * scale - m)
            if not where:
                continue
            bars = ax.barh(where, medians, height=width, xerr=[low, high], capsize=3, label=name)
            ax.bar_label(bars, labels=[f"{v:.0f}" if v >= 100 else f"{v:.3g}" for v in medians], padding=4, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.25)
        if len(series) > 1:
            ax.legend(fontsize=8)
    axes[0][0].set_yticks(positions)
    axes[0][0].set_yticklabels(labels, fontsize=8)
    axes[0][0].invert_yaxis()
    s = report["settings"]
    fig.suptitle(
        f"phi3 bench {Path(str(s['model'])).name}: {s['prompt_tokens']}-token prompt, "
        f"{s['new_tokens']} new tokens, median of {s['runs']} (whiskers: min-max)",
        fontsize=11,
    )
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def import_pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend, or a ConfigError naming the extra."""
    import importlib

    try:
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise ConfigError("--plot needs matplotlib", hint='pip install "phi3-core[bench]"') from None
    return plt
