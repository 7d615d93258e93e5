"""The report's figures, drawn with matplotlib (Agg, no display) from ``stats.json`` data alone.

Each function returns a ``data:image/png;base64,...`` URI, so the HTML report is one file that
opens anywhere. Histograms show the share of clips per bin, so two corpora of different sizes
compare on one axis.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

COLOURS = ("#1f77b4", "#ff7f0e")
WIDTH, HEIGHT, DPI = 6.4, 3.0, 100


def _encode(figure: plt.Figure) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=DPI)
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def funnel_figure(funnels: Sequence[dict[str, Any]], labels: Sequence[str], steps: Sequence[str]) -> str:
    """Horizontal bars of the funnel ``steps``, one bar per corpus (none where a corpus lacks the step)."""
    figure, axis = plt.subplots(figsize=(2 * WIDTH, 0.3 * len(steps) * len(funnels) + 1.0))
    height = 0.8 / len(funnels)
    units = {}
    for i, (data, label) in enumerate(zip(funnels, labels)):
        counts = {s["step"]: s["count"] for s in data["steps"]}
        units.update({s["step"]: s["unit"] for s in data["steps"]})
        shown = [k for k, step in enumerate(steps) if step in counts]
        bars = axis.barh([k + i * height for k in shown], [counts[steps[k]] for k in shown], height=height,
                         color=COLOURS[i], label=label)
        axis.bar_label(bars, fmt="{:,.0f}", fontsize=8, padding=2)
    axis.set_yticks([k + height * (len(funnels) - 1) / 2 for k in range(len(steps))],
                    [f"{step} ({units[step]})" for step in steps], fontsize=9)
    axis.invert_yaxis()
    axis.set_xlabel("count")
    axis.set_title("Funnel: sources and clips left after each step")
    if len(funnels) > 1:
        axis.legend(fontsize=8, loc="lower right")
    return _encode(figure)


def histogram_figure(dists: Sequence[dict[str, Any]], labels: Sequence[str], title: str, xlabel: str,
                     threshold: float | None = None, ylabel: str = "share of clips") -> str:
    """Share of the counted items per bin of each corpus's histogram, with the threshold as a vertical line."""
    figure, axis = plt.subplots(figsize=(WIDTH, HEIGHT))
    for i, (dist, label) in enumerate(zip(dists, labels)):
        hist = dist.get("histogram")
        if not hist:
            continue
        total = sum(hist["counts"]) or 1
        axis.stairs([c / total for c in hist["counts"]], hist["edges"], fill=len(dists) == 1, alpha=0.8,
                     color=COLOURS[i], label=f"{label} (n={dist['count']:,})")
    if threshold is not None:
        axis.axvline(threshold, color="#d62728", linestyle="--", label=f"threshold {threshold:g}")
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8)
    return _encode(figure)


def top_figure(tops: Sequence[list[list[Any]]], labels: Sequence[str], title: str, limit: int = 12) -> str:
    """The most frequent values of each corpus, one panel per corpus."""
    figure, axes = plt.subplots(1, len(tops), figsize=(WIDTH, 0.25 * limit + 1.0), squeeze=False)
    for axis, top, label, colour in zip(axes[0], tops, labels, COLOURS):
        shown = top[:limit]
        if not shown:
            axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
            axis.set_axis_off()
        axis.barh(range(len(shown)), [n for _, n in shown], color=colour)
        axis.set_yticks(range(len(shown)), [str(v) for v, _ in shown])
        axis.invert_yaxis()
        axis.tick_params(labelsize=7)
        axis.set_title(label if len(tops) > 1 else title, fontsize=9)
    if len(tops) > 1:
        figure.suptitle(title, fontsize=10)
    return _encode(figure)
