"""Summaries of one column: count, sum, extremes, quantiles and a histogram, or the most frequent values.

Histograms are stored as edges and counts in the statistics themselves, so the figures (and a
comparison of two corpora) are drawn from ``stats.json`` alone, without the index.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Quantiles reported for every distribution.
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 40


def finite(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """``values`` without nulls, NaN and infinities (a clip of zero duration has no bitrate)."""
    values = pc.drop_null(values)
    if pa.types.is_floating(values.type):
        values = values.filter(pc.is_finite(values))
    return values


def describe(values: pa.Array | pa.ChunkedArray, bins: int = HISTOGRAM_BINS, integer: bool = False,
             extra_edges: tuple[float, ...] = ()) -> dict[str, Any]:
    """Count, sum, mean, min, max, quantiles and histogram of the finite values.

    ``integer`` puts one bin on each integer (up to ``bins`` of them); ``extra_edges`` widens the
    histogram's range to include them (a threshold outside the data is still drawn on the figure).
    """
    values = finite(values)
    count = len(values)
    out: dict[str, Any] = {"count": count}
    if count == 0:
        return out
    low, high = (v.as_py() for v in pc.min_max(values).values())
    quantiles = pc.quantile(values, q=list(QUANTILES)).to_pylist()
    out.update(sum=pc.sum(values).as_py(), mean=pc.mean(values).as_py(), min=low, max=high,
               quantiles={f"p{round(q * 100)}": v for q, v in zip(QUANTILES, quantiles)})
    out["histogram"] = histogram(values, low, high, bins, integer, extra_edges)
    return out


def histogram(values: pa.Array | pa.ChunkedArray, low: float, high: float, bins: int, integer: bool,
              extra_edges: tuple[float, ...]) -> dict[str, list[float]]:
    """Equal-width bins over the data's range (and ``extra_edges``); counts per bin."""
    low, high = min([low, *extra_edges]), max([high, *extra_edges])
    if integer:
        edges = np.arange(np.floor(low), np.floor(high) + 2) - 0.5
        if len(edges) > bins + 1:
            edges = np.linspace(edges[0], edges[-1], bins + 1)
    else:
        edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    counts, edges = np.histogram(values.to_numpy(), bins=edges)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def top_values(values: pa.Array | pa.ChunkedArray, limit: int = 15) -> list[list[Any]]:
    """The ``limit`` most frequent values and their counts, most frequent first (ties by value)."""
    counts = pc.value_counts(pc.drop_null(values))
    if len(counts) == 0:
        return []
    found = counts.field("values")
    if pa.types.is_dictionary(found.type):
        found = found.dictionary_decode()
    table = pa.table({"value": found, "count": counts.field("counts")})
    table = table.sort_by([("count", "descending"), ("value", "ascending")]).slice(0, limit)
    return [[v, n] for v, n in zip(table["value"].to_pylist(), table["count"].to_pylist())]
