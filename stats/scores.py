"""Filter scores from the index's ``scores`` column (a JSON object per clip), parsed a batch at a time.

The filters decide the layout of that object; this module assumes only that it is JSON. Every
numeric leaf is a score, named by its path (``{"ocr": {"max": 0.1}}`` gives ``ocr.max``); a leaf
named ``score`` is named after its parent, and a leaf named ``threshold`` (or ``min``/``max``
beside a ``score``) is that score's threshold rather than a score. Thresholds are also looked up in
the manifest's config (``<name>: {threshold: ...}``, ``<name>_threshold``, ``min_<name>``,
``max_<name>``). Batches are parsed by Arrow's JSON reader, so millions of rows cost seconds.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

log = logging.getLogger(__name__)

THRESHOLD_KEYS = ("threshold",)


def collect_scores(batches: Iterable[pa.Array]) -> tuple[dict[str, pa.ChunkedArray], dict[str, float]]:
    """Every score's values over all clips (float64) and the thresholds the scores carry."""
    values: dict[str, list[pa.Array]] = defaultdict(list)
    thresholds: dict[str, Counter] = defaultdict(Counter)
    for batch in batches:
        for name, column in _leaves(_parse(batch)):
            target, role = _role(name)
            if role == "threshold":
                counts = pc.value_counts(pc.drop_null(column))
                thresholds[target].update(dict(zip(counts.field("values").to_pylist(),
                                                   counts.field("counts").to_pylist())))
            else:
                values[target].append(column)
    scores = {name: pa.chunked_array(chunks, pa.float64()) for name, chunks in sorted(values.items())}
    return scores, {name: counts.most_common(1)[0][0] for name, counts in thresholds.items() if counts}


def _parse(batch: pa.Array) -> pa.StructArray | None:
    """The batch's JSON objects as one struct array (rows without scores left out)."""
    texts = pc.utf8_trim_whitespace(pc.drop_null(batch))
    texts = texts.filter(pc.and_(pc.not_equal(texts, ""), pc.not_equal(texts, "{}")))
    if len(texts) == 0:
        return None
    lines = pc.replace_substring(texts.cast(pa.large_string()), "\n", " ")
    payload = pc.binary_join(pa.LargeListArray.from_arrays(pa.array([0, len(lines)], pa.int64()), lines),
                             pa.scalar("\n", pa.large_string()))
    try:
        table = pajson.read_json(io.BytesIO(payload[0].as_buffer()))
    except pa.ArrowInvalid:
        # Rows disagree on a field's type (a number here, an object there): parse them one by one.
        rows = [_numeric_only(json.loads(t)) for t in texts.to_pylist()]
        table = pa.Table.from_pylist(rows)
    return pa.StructArray.from_arrays([c.combine_chunks() for c in table.columns], names=table.column_names)


def _numeric_only(value: Any) -> Any:
    """Keep numbers and objects (what scores are made of); drop other leaves."""
    if isinstance(value, dict):
        return {k: _numeric_only(v) for k, v in value.items() if isinstance(v, dict | int | float)}
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _leaves(struct: pa.StructArray | None, prefix: str = "") -> Iterator[tuple[str, pa.Array]]:
    """``(dotted path, float64 values)`` of every numeric leaf; booleans and text are not scores."""
    if struct is None:
        return
    for i, field in enumerate(struct.type):
        column = struct.field(i)
        name = f"{prefix}{field.name}"
        if pa.types.is_struct(field.type):
            yield from _leaves(column, f"{name}.")
        elif pa.types.is_integer(field.type) or pa.types.is_floating(field.type):
            yield name, column.cast(pa.float64())


def _role(path: str) -> tuple[str, str]:
    """Which score a leaf belongs to and whether it is the score or its threshold."""
    parent, _, leaf = path.rpartition(".")
    if parent and leaf == "score":
        return parent, "score"
    if parent and leaf in THRESHOLD_KEYS:
        return parent, "threshold"
    return path, "score"


def config_thresholds(config: dict[str, Any], names: Iterable[str]) -> dict[str, float]:
    """Thresholds of the named scores found anywhere in the job config (see the module docstring)."""
    found: dict[str, float] = {}
    for name in names:
        short = name.rsplit(".", 1)[-1]
        for key, value in _walk(config):
            parent, _, leaf = key.rpartition(".")
            owner = parent.rsplit(".", 1)[-1]
            if (owner in (name, short) and leaf in THRESHOLD_KEYS) or leaf in (
                    f"{short}_threshold", f"min_{short}", f"max_{short}"):
                found.setdefault(name, value)
    return found


def _walk(node: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """``(dotted key, number)`` of every numeric leaf of a nested config."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{prefix}{key}.")
    elif isinstance(node, int | float) and not isinstance(node, bool):
        yield prefix.rstrip("."), float(node)
