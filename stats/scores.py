"""Filter scores from the index's ``scores`` column: each rule's scores and threshold, a batch at a time.

The column holds the filter's decision records (``shards.scores.DecisionRecord``). The statistics
read only their checks: ``checks.<rule>.score`` is a value of the score named ``<rule>`` and
``checks.<rule>.threshold`` its threshold. Thresholds come from the records alone, never from the
config: a record carries the threshold its clip was judged by. The filters' raw scores are not read.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from shards.scores import read_checks


def collect_scores(batches: Iterable[pa.Array]) -> tuple[dict[str, pa.ChunkedArray], dict[str, float]]:
    """Every rule's scores over the clips that have its check (float64), and its most common threshold."""
    values: dict[str, list[pa.Array]] = defaultdict(list)
    thresholds: dict[str, Counter] = defaultdict(Counter)
    for batch in batches:
        for rule, (score, threshold) in read_checks(batch).items():
            values[rule].append(pc.drop_null(score))
            counts = pc.value_counts(pc.drop_null(threshold))
            thresholds[rule].update(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))
    scores = {rule: pa.chunked_array(chunks, pa.float64()) for rule, chunks in sorted(values.items())}
    return scores, {rule: counts.most_common(1)[0][0] for rule, counts in thresholds.items() if counts}
