"""The filter's decision record: the ``scores`` column of the index, of a shard's json and of a rejected clip.

``curation.filtering`` writes one record per judged clip; ``stats`` reads it. The record is a JSON
object, written by ``DecisionRecord.to_json`` only:

    {"checks": {"<rule>": {"score": 1080, "threshold": 720, "passed": true}, ...},
     "rejected_by": null | "<rule>", "score_only": false,
     "<filter>": {<its raw scores>}, ...}

* ``checks``: one entry per rule the filter applied, named by the rule (which is also the rejection
  reason when it fails). A rule whose threshold is switched off has no entry. ``score`` is the
  filter score the rule compares, ``threshold`` the configured limit (rounded), ``passed`` the
  outcome. This is the only part of the record with a fixed meaning for readers: the statistics read
  ``checks.<rule>.score`` and ``checks.<rule>.threshold`` and nothing else.
* ``rejected_by``: the rule that rejected the clip, or null (kept, or ``score_only``). A kept clip may
  also hold a failed check of a filter that records without rejecting (``filter.sharpness.reject:
  false``, the default: its ``blurry`` and ``blocky`` checks).
* ``score_only``: every rule ran and nothing was rejected.
* ``<filter>`` (``quality``, ``decode``, ``motion``, ``sharpness``, ``text``, ``watermark``): the filter's
  raw scores, for inspection; their layout is each filter's own and may change.

``checks`` is always the first key, so a batch of records can be read for its checks alone (see
``read_checks``) without parsing the raw scores (the text boxes of every frame, for one). Non-finite
numbers are written as null (JSON has no NaN). An empty object (``{}``) means no filter ran.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

#: Keys of the record that are not a filter's raw scores.
RESERVED = ("checks", "rejected_by", "score_only")

#: The ``checks`` object at the start of a record: rules (depth 1) holding numbers and booleans (depth 2).
_CHECKS = r'^\{"checks": (?P<checks>\{(?:[^{}]|\{[^{}]*\})*\})'


@dataclass
class Check:
    """One rule applied to one clip: the score compared, the threshold it was compared with, the outcome."""

    score: float | None
    threshold: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"score": _finite(self.score), "threshold": _finite(self.threshold), "passed": bool(self.passed)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Check:
        return cls(score=data.get("score"), threshold=data["threshold"], passed=bool(data["passed"]))


@dataclass
class DecisionRecord:
    """What the filter decided about one clip, and the scores it decided on (see the module docstring)."""

    checks: dict[str, Check] = field(default_factory=dict)
    rejected_by: str | None = None
    score_only: bool = False
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # filter name -> its raw scores

    def add_scores(self, filter_name: str, scores: dict[str, Any]) -> None:
        """Merge a filter's raw scores into the record."""
        if filter_name in RESERVED:
            raise ValueError(f"a filter cannot be named {filter_name!r}: {RESERVED} are keys of the record")
        self.scores[filter_name] = {**self.scores.get(filter_name, {}), **scores}

    @property
    def failed(self) -> list[str]:
        """The rules the clip failed, in the order they ran."""
        return [name for name, check in self.checks.items() if not check.passed]

    def to_dict(self) -> dict[str, Any]:
        clash = set(self.scores) & set(RESERVED)
        if clash:
            raise ValueError(f"raw scores under reserved keys {sorted(clash)}")
        return {"checks": {name: check.to_dict() for name, check in self.checks.items()},
                "rejected_by": self.rejected_by, "score_only": bool(self.score_only),
                **{name: _finite(scores) for name, scores in self.scores.items()}}

    def to_json(self) -> str:
        """The record as stored in the ``scores`` column (``checks`` first, no NaN)."""
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecisionRecord:
        unknown = [k for k, v in data.items() if k not in RESERVED and not isinstance(v, dict)]
        if unknown:
            raise ValueError(f"not a decision record: {unknown} are neither record keys {RESERVED} nor filter scores")
        return cls(checks={name: Check.from_dict(c) for name, c in (data.get("checks") or {}).items()},
                   rejected_by=data.get("rejected_by"), score_only=bool(data.get("score_only", False)),
                   scores={k: v for k, v in data.items() if k not in RESERVED})

    @classmethod
    def from_json(cls, text: str | None) -> DecisionRecord:
        """The record of a ``scores`` value; an empty record for null, ``""`` or ``{}`` (no filter ran)."""
        if text is None or not text.strip():
            return cls()
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"not a decision record: a JSON {type(data).__name__}")
        return cls.from_dict(data)


def read_checks(batch: pa.Array) -> dict[str, tuple[pa.Array, pa.Array]]:
    """``{rule: (scores, thresholds)}`` of a batch of ``scores`` values, float64, null where a clip has no such check.

    Vectorised: the ``checks`` object of each record is cut out with a regular expression and parsed
    by Arrow's JSON reader, so raw filter scores are never parsed and millions of rows cost seconds.
    Records written otherwise (``checks`` not first) are parsed one by one with ``DecisionRecord``.
    """
    texts = pc.utf8_trim_whitespace(pc.drop_null(batch).cast(pa.large_string()))
    texts = texts.filter(pc.and_(pc.not_equal(texts, ""), pc.not_equal(texts, "{}")))
    if len(texts) == 0:
        return {}
    matched = pc.extract_regex(texts, _CHECKS)
    fast = pc.is_valid(matched)
    checks = pc.struct_field(matched.filter(fast), "checks")
    slow = [DecisionRecord.from_json(t).to_dict()["checks"] for t in texts.filter(pc.invert(fast)).to_pylist()]
    if len(checks):
        try:
            table = _json_lines(checks)
        except pa.ArrowInvalid:  # the rows disagree on a type (a rule's score null in some, a number in others)
            slow += [json.loads(t) for t in checks.to_pylist()]
            table = pa.table({})
    else:
        table = pa.table({})
    columns = {name: _score_threshold(table[name]) for name in table.column_names}
    if slow:
        names = dict.fromkeys(name for row in slow for name in row)
        for name in names:
            part = [row.get(name) or {} for row in slow]
            extra = (pa.array([c.get("score") for c in part], pa.float64()),
                     pa.array([c.get("threshold") for c in part], pa.float64()))
            before = columns.get(name, (pa.nulls(table.num_rows, pa.float64()),) * 2)
            columns[name] = tuple(pa.concat_arrays([b, e]) for b, e in zip(before, extra))  # type: ignore[assignment]
        for name in set(columns) - set(names):
            columns[name] = tuple(pa.concat_arrays([c, pa.nulls(len(slow), pa.float64())])
                                  for c in columns[name])  # type: ignore[assignment]
    return columns


def _json_lines(objects: pa.Array) -> pa.Table:
    """One JSON object per element, read by Arrow's JSON reader as one table."""
    lines = pc.replace_substring(objects, "\n", " ")
    payload = pc.binary_join(pa.LargeListArray.from_arrays(pa.array([0, len(lines)], pa.int64()), lines),
                             pa.scalar("\n", pa.large_string()))
    return pajson.read_json(io.BytesIO(payload[0].as_buffer()))


def _score_threshold(column: pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """``(score, threshold)`` of a parsed check column, as float64."""
    column = column.combine_chunks()
    if not pa.types.is_struct(column.type):  # every row null: no field was ever seen
        return pa.nulls(len(column), pa.float64()), pa.nulls(len(column), pa.float64())
    out = []
    for name in ("score", "threshold"):
        if column.type.get_field_index(name) < 0:
            out.append(pa.nulls(len(column), pa.float64()))
            continue
        values = pc.struct_field(column, name)
        out.append(pa.nulls(len(column), pa.float64()) if pa.types.is_null(values.type)
                   else values.cast(pa.float64()))
    return out[0], out[1]


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN or infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
