"""Near-duplicates across the corpus: perceptual hashes grouped by LSH, one clip kept per group.

Re-uploads, mirrored copies and the same scene cut from two sources differ in their bytes (exact copies,
``curation.copies``, do not catch them) but not in their picture. The filter records each clip's
perceptual hash (``curation.filters.phash``: one 64-bit pHash per sampled frame). Like exact copies, they
are found across the corpus after its partitions are written, on the same mechanism (``curation.copies``):

1. each partition writer leaves ``work/phashes/p00042.parquet``: one row per finished clip, its ``node``
   (the keep rule, the key and the partition in one sortable string, ``node_id``) and its frame hashes;
2. ``find_near_duplicates`` groups them (in the driver for a small corpus, on Ray Data for a large one):

   * **LSH**: every frame hash gives ``tables`` bucket keys, each ``bits`` bits of the hash at positions
     drawn once from a fixed seed (bit-sampling LSH for the Hamming distance: two frames ``d`` bits apart
     share a table's key with probability ~(1 - d/64)^bits; a clip has a chance in every table for each of
     its frames). Clips sharing a bucket are candidates; a bucket larger than ``max_bucket`` is compared in
     a sliding window of that many entries (ordered by frame hash), so no bucket costs more than linear;
   * **verification**: a candidate pair is an edge when its frame hashes align in order within
     ``max_distance`` bits for ``min_matched`` of the shorter clip (``phash.near_duplicates``), vectorised
     over all pairs of a bucket group;
   * **groups**: the connected components of the edges, by the large-star / small-star iteration (Kiveris
     et al., "Connected Components in Map-Reduce and Beyond", SoCC 2014), which needs only group-bys on
     node, so on Ray Data no process holds more than a shuffle partition of the edges;
   * **keep rule**: of each group, the clip with the highest resolution (pixels), then the longest, then
     the lowest key is kept (the smallest ``node``); every other clip is its near-duplicate. The rule
     depends on the clips alone, not on input order or which partition ran first;
3. the decisions are written per partition (``work/near_duplicates/p00042-<digest>.parquet``) and the
   partitions whose decisions changed are written again: each near-duplicate becomes a
   ``dedup/near_duplicate`` rejection whose ``duplicate_of`` is the key of the clip kept in its place. Its
   clip stays in ``work/clips`` and returns to the corpus if the kept clip leaves the input.

Exact copies have equal hashes and so are near-duplicates too; the same rule keeps the same clip (the
lowest source id's), and a clip already rejected as an exact copy stays one.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from curation.config import NearDuplicateConfig
from curation.copies import DedupKind, find_in_corpus, reject_duplicates
from curation.filters.phash import parse_hashes
from curation.workarea import WorkArea
from shards.schema import STATUS_OK

log = logging.getLogger(__name__)

#: Corpora of up to this many sources are grouped in the driver (~40 clips a source, 9 hashes a clip:
#: ~30 MB of hashes and a few hundred MB of LSH entries); larger ones on Ray Data.
DRIVER_MAX_SOURCES = 10_000

#: The sortable prefix of a node: 10 digits of (10^10 - pixels) and 10 of (10^10 - milliseconds).
_RANK_DIGITS = 10
_RANK = 10**_RANK_DIGITS

PHASHES_SCHEMA = pa.schema([pa.field("node", pa.string()), pa.field("hashes", pa.list_(pa.uint64()))])
DECISIONS_SCHEMA = pa.schema([pa.field("key", pa.string()), pa.field("partition", pa.int32()),
                              pa.field("duplicate_of", pa.string())])
EDGES_SCHEMA = pa.schema([pa.field("u", pa.string()), pa.field("v", pa.string())])

NEAR = DedupKind("near_duplicates", "phashes", "near_duplicate", PHASHES_SCHEMA, DECISIONS_SCHEMA,
                 ("key", "duplicate_of"))

#: Pairs verified at once (each costs frames x frames bytes of match matrix).
VERIFY_CHUNK = 262_144

#: The fixed seed of the LSH tables' bit positions: every run and every worker draws the same tables.
LSH_SEED = 20_260_417


# -- the clips' hashes, as the partition writer leaves them ----------------------------------------------------


def node_id(key: str, partition: int, width: int, height: int, duration: float) -> str:
    """A clip as one string whose order is the keep rule: most pixels, then longest, then lowest key.

    ``(10^10 - pixels)``, ``(10^10 - milliseconds)`` (10 digits each), the key, a tab, the partition. Keys
    are fixed-length (``<source_id>_<n:04d>``), so the smallest node of a group is the clip to keep.
    """
    pixels, ms = max(0, width) * max(0, height), max(0, round(duration * 1000))
    return f"{_RANK - pixels:0{_RANK_DIGITS}d}{_RANK - ms:0{_RANK_DIGITS}d}{key}\t{partition}"


def node_key(node: str) -> str:
    return node[2 * _RANK_DIGITS:].partition("\t")[0]


def node_partition(node: str) -> int:
    return int(node.rpartition("\t")[2])


def clip_hashes(rows: list[dict[str, Any]], final_stage: str) -> pa.Table:
    """One row per finished clip among ``rows`` whose decision record holds frame hashes, sorted by node."""
    out: list[tuple[str, list[int]]] = []
    for row in rows:
        if row["status"] != STATUS_OK or row["stage"] != final_stage or not row.get("scores"):
            continue
        hexes = (json.loads(row["scores"]).get("phash") or {}).get("hashes")
        if hexes:
            out.append((node_id(row["key"], row["partition"], row["clip_width"] or 0, row["clip_height"] or 0,
                                row["clip_duration"] or 0.0), parse_hashes(hexes)))
    out.sort()
    return pa.table({"node": [n for n, _ in out], "hashes": [h for _, h in out]}, schema=PHASHES_SCHEMA)


def write_phashes(work: WorkArea, partition: int, rows: list[dict[str, Any]], final_stage: str) -> None:
    """Leave the partition's clip hashes (``clip_hashes``) for the grouping."""
    work.dedup_input(NEAR.inputs, partition).write_table(clip_hashes(rows, final_stage))


def apply_near_duplicates(rows: list[dict[str, Any]], decisions: pa.Table | None) -> list[dict[str, Any]]:
    """``rows`` with every finished clip found a near-duplicate turned into a ``dedup/near_duplicate`` rejection."""
    if decisions is None or decisions.num_rows == 0:
        return rows
    kept = dict(zip(decisions["key"].to_pylist(), decisions["duplicate_of"].to_pylist(), strict=True))
    return reject_duplicates(rows, NEAR, lambda row: kept.get(row["key"]),
                             lambda _, original: f"its picture matches clip {original} (perceptual hash: "
                                                 "filter.near_duplicates), which is kept instead (higher resolution, "
                                                 "longer, or the lower key)")


# -- LSH and verification ------------------------------------------------------------------------------------------


def lsh_positions(cfg: NearDuplicateConfig) -> np.ndarray:
    """``(tables, bits)`` bit positions of the frame hash that make each table's key (fixed seed)."""
    rng = np.random.default_rng(LSH_SEED)
    return np.stack([np.sort(rng.choice(64, size=cfg.bits, replace=False)) for _ in range(cfg.tables)])


def hash_matrix(hashes: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The clips' frame hashes as a ``(clips, frames)`` uint64 matrix and its mask of real (not padding) entries."""
    hashes = hashes.combine_chunks() if isinstance(hashes, pa.ChunkedArray) else hashes
    counts = pc.list_value_length(hashes).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    width = int(counts.max()) if len(counts) else 0
    flat = pc.list_flatten(hashes).to_numpy(zero_copy_only=False).astype(np.uint64)
    valid = np.arange(width)[None, :] < counts[:, None]
    matrix = np.zeros((len(counts), width), dtype=np.uint64)
    matrix[valid] = flat
    return matrix, valid


def bucket_entries(matrix: np.ndarray, valid: np.ndarray,
                   positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every clip's LSH entries, once per (bucket, clip): ``(bucket, frame hash, clip index)``, sorted.

    A bucket is a table's number (high bits) and the frame's bits at that table's positions; entries are
    sorted by bucket, then frame hash, so similar frames sit side by side in a large bucket.
    """
    buckets, hashes, clips = [], [], []
    clip_of = np.broadcast_to(np.arange(len(matrix))[:, None], matrix.shape)
    for table, bits in enumerate(positions):
        key = np.zeros(matrix.shape, dtype=np.uint64)
        for i, position in enumerate(bits):
            key |= ((matrix >> np.uint64(position)) & np.uint64(1)) << np.uint64(i)
        key |= np.uint64(table) << np.uint64(48)
        key[~valid] = np.iinfo(np.uint64).max  # padding: sorted last in its row, dropped below
        order = np.argsort(key, axis=1, kind="stable")
        key, frame = np.take_along_axis(key, order, axis=1), np.take_along_axis(matrix, order, axis=1)
        keep = np.take_along_axis(valid, order, axis=1)
        keep[:, 1:] &= key[:, 1:] != key[:, :-1]  # a clip once per bucket (its frames of one shot often share one)
        buckets.append(key[keep])
        hashes.append(frame[keep])
        clips.append(clip_of[keep])
    bucket, frame, clip = np.concatenate(buckets), np.concatenate(hashes), np.concatenate(clips).astype(np.int64)
    order = np.lexsort((clip, frame, bucket))
    return bucket[order], frame[order], clip[order]


def candidate_pairs(bucket: np.ndarray, clip: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct clip pairs ``(i < j)`` that share a bucket within ``window`` entries of each other (sorted entries)."""
    firsts, seconds = [], []
    offset = 1
    while offset < min(window, len(bucket)):
        same = bucket[:-offset] == bucket[offset:]
        if not same.any():  # runs are shorter than this offset: no longer one either
            break
        a, b = clip[:-offset][same], clip[offset:][same]
        firsts.append(np.minimum(a, b))
        seconds.append(np.maximum(a, b))
        offset += 1
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = np.unique(np.stack([np.concatenate(firsts), np.concatenate(seconds)]), axis=1)
    pairs = pairs[:, pairs[0] != pairs[1]]
    return pairs[0], pairs[1]


def verify_pairs(matrix: np.ndarray, valid: np.ndarray, first: np.ndarray, second: np.ndarray,
                 cfg: NearDuplicateConfig) -> np.ndarray:
    """Which candidate pairs are near-duplicates (``phash.near_duplicates``, vectorised over the pairs)."""
    keep = np.zeros(len(first), dtype=bool)
    counts = valid.sum(axis=1)
    frames = matrix.shape[1]
    for start in range(0, len(first), VERIFY_CHUNK):
        a, b = first[start:start + VERIFY_CHUNK], second[start:start + VERIFY_CHUNK]
        distance = np.bitwise_count(matrix[a][:, :, None] ^ matrix[b][:, None, :])
        match = (distance <= cfg.max_distance) & valid[a][:, :, None] & valid[b][:, None, :]
        previous = np.zeros((len(a), frames + 1), dtype=np.int16)
        for x in range(frames):  # longest common subsequence of matching frames, one row of the table at a time
            current = np.zeros_like(previous)
            for y in range(frames):
                current[:, y + 1] = np.maximum(np.maximum(previous[:, y] + match[:, x, y], previous[:, y + 1]),
                                               current[:, y])
            previous = current
        shorter = np.minimum(counts[a], counts[b])
        needed = np.maximum(1, np.ceil(cfg.min_matched * shorter - 1e-9))
        keep[start:start + VERIFY_CHUNK] = previous[:, -1] >= needed
    return keep


def edges_of(nodes: pa.Array, hashes: pa.Array, cfg: NearDuplicateConfig,
             entries: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> pa.Table:
    """The verified near-duplicate edges ``(u < v)`` among clips ``nodes`` (with their frame ``hashes``).

    ``entries`` are the clips' LSH entries when a caller has them (a bucket group on Ray Data); by default
    all of the clips' own.
    """
    matrix, valid = hash_matrix(hashes)
    if entries is None:
        entries = bucket_entries(matrix, valid, lsh_positions(cfg))
    bucket, _, clip = entries
    first, second = candidate_pairs(bucket, clip, cfg.max_bucket)
    verified = verify_pairs(matrix, valid, first, second, cfg)
    names = np.asarray(nodes.to_pylist() if not isinstance(nodes, list) else nodes, dtype=object)
    u, v = names[first[verified]], names[second[verified]]
    low, high = np.where(u < v, u, v), np.where(u < v, v, u)
    return pa.table({"u": low.tolist(), "v": high.tolist()}, schema=EDGES_SCHEMA)


# -- connected components: large-star / small-star ----------------------------------------------------------------


def large_star(edges: pa.Table) -> pa.Table:
    """Every node's larger neighbours re-attached to the smallest node of its closed neighbourhood."""
    return _large_star_directed(pa.concat_tables([edges, edges.select(["v", "u"]).rename_columns(["u", "v"])]))


def _large_star_directed(both: pa.Table) -> pa.Table:
    """``large_star`` of edges given in both directions (every edge of a node ``u`` is a row ``(u, v)``)."""
    smallest = both.group_by("u").aggregate([("v", "min")])
    centre = pa.table({"u": smallest["u"], "m": pc.min_element_wise(smallest["u"], smallest["v_min"])})
    joined = both.join(centre, "u")
    larger = joined.filter(pc.greater(joined["v"], joined["u"]))
    return _distinct(pa.table({"u": larger["v"], "v": larger["m"]}))


def small_star(edges: pa.Table) -> pa.Table:
    """Every node and its smaller neighbours attached to the smallest of them (needs every edge of each larger node)."""
    down = pa.table({"u": pc.max_element_wise(edges["u"], edges["v"]),
                     "v": pc.min_element_wise(edges["u"], edges["v"])})
    smallest = down.group_by("u").aggregate([("v", "min")]).rename_columns(["u", "m"])
    joined = down.join(smallest, "u")
    out = pa.concat_tables([pa.table({"u": joined["v"], "v": joined["m"]}),
                            pa.table({"u": smallest["u"], "v": smallest["m"]})])
    return _distinct(out.filter(pc.not_equal(out["u"], out["v"])))


def _distinct(edges: pa.Table) -> pa.Table:
    """The edges once each, as ``(larger, smaller)`` pairs, sorted (so two iterations can be compared)."""
    if edges.num_rows == 0:
        return EDGES_SCHEMA.empty_table()
    low = pc.min_element_wise(edges["u"], edges["v"])
    high = pc.max_element_wise(edges["u"], edges["v"])
    table = pa.table({"u": high, "v": low}).group_by(["u", "v"]).aggregate([])
    return table.select(["u", "v"]).cast(EDGES_SCHEMA).sort_by([("u", "ascending"), ("v", "ascending")])


def components(edges: pa.Table) -> pa.Table:
    """``(u, v)``: every node of a component with more than one node and the component's smallest node ``v``."""
    current = _distinct(edges)
    while True:
        following = small_star(large_star(current))
        if following.equals(current):
            return following
        current = following


def decisions_of(stars: pa.Table) -> pa.Table:
    """The per-clip decisions of converged stars: each non-smallest node is a near-duplicate of its star's centre."""
    nodes, kept = stars["u"].to_pylist(), stars["v"].to_pylist()
    return pa.table({"key": [node_key(n) for n in nodes], "partition": [node_partition(n) for n in nodes],
                     "duplicate_of": [node_key(n) for n in kept]}, schema=DECISIONS_SCHEMA)


# -- the corpus ----------------------------------------------------------------------------------------------------


def group_in_driver(clips: pa.Table, cfg: NearDuplicateConfig) -> pa.Table:
    """The decisions of a corpus small enough for one process: every partition's hashes at once."""
    return decisions_of(components(edges_of(clips["node"].combine_chunks(), clips["hashes"], cfg)))


def group_with_ray(dataset: ray.data.Dataset, cfg: NearDuplicateConfig, shuffle: int) -> ray.data.Dataset:
    """The decisions of a large corpus on Ray Data.

    LSH entries are shuffled by bucket group and each group's candidates verified there; the components
    come from large-star and small-star steps, each a shuffle of the edges by node, repeated until the
    edges form stars (every node attached to its component's smallest, ``_not_stars`` finds none).
    """
    config = cfg.model_dump()
    edges = (dataset.map_batches(_entries, fn_kwargs={"config": config, "groups": shuffle}, batch_format="pyarrow")
             .groupby("group", num_partitions=shuffle)
             .map_groups(_group_edges, fn_kwargs={"config": config}, batch_format="pyarrow")
             .materialize())
    count, iterations = edges.count(), 0
    while count:
        edges = (edges.map_batches(_by_node, fn_kwargs={"groups": shuffle, "both_ways": True}, batch_format="pyarrow")
                 .groupby("group", num_partitions=shuffle).map_groups(_large_star_group, batch_format="pyarrow")
                 .map_batches(_by_node, fn_kwargs={"groups": shuffle, "both_ways": False}, batch_format="pyarrow")
                 .groupby("group", num_partitions=shuffle).map_groups(_small_star_group, batch_format="pyarrow")
                 .materialize())
        iterations += 1
        if not edges.count() or not (edges.map_batches(_roles, fn_kwargs={"groups": shuffle}, batch_format="pyarrow")
                                     .groupby("group", num_partitions=shuffle)
                                     .map_groups(_not_stars, batch_format="pyarrow").sum("violations")):
            break
    log.info("near-duplicates: %d verified edge(s), components in %d iteration(s)", count, iterations)
    return edges.map_batches(decisions_of, batch_format="pyarrow")


def _entries(clips: pa.Table, config: dict[str, Any], groups: int) -> pa.Table:
    """A batch of clips' LSH entries, each with its clip (node and hashes) and its bucket group."""
    cfg = NearDuplicateConfig(**config)
    matrix, valid = hash_matrix(clips["hashes"])
    bucket, frame, clip = bucket_entries(matrix, valid, lsh_positions(cfg))
    take = pa.array(clip)
    return pa.table({"group": (bucket % np.uint64(groups)).astype(np.int64), "bucket": bucket, "frame": frame,
                     "node": clips["node"].take(take), "hashes": clips["hashes"].take(take)})


def _group_edges(entries: pa.Table, config: dict[str, Any]) -> pa.Table:
    """The verified edges of one bucket group: its clips once each, their entries re-indexed onto them."""
    cfg = NearDuplicateConfig(**config)
    nodes = entries["node"].combine_chunks()
    unique = pc.unique(nodes)
    index = pc.index_in(nodes, value_set=unique).to_numpy().astype(np.int64)
    first = pc.index_in(unique, value_set=nodes).to_numpy().astype(np.int64)
    bucket, frame = entries["bucket"].to_numpy(), entries["frame"].to_numpy()
    order = np.lexsort((index, frame, bucket))
    return edges_of(unique, entries["hashes"].take(pa.array(first)), cfg,
                    entries=(bucket[order], frame[order], index[order]))


def _node_groups(nodes: pa.Array | pa.ChunkedArray, groups: int) -> pa.Array:
    """Each node's shuffle group, from the hex digits of its source id (uniform, and the same in every process)."""
    return pa.array([int(node_key(n)[:8], 16) % groups for n in nodes.to_pylist()], pa.int64())


def _by_node(edges: pa.Table, groups: int, both_ways: bool) -> pa.Table:
    """Edges keyed by node for a star step: every edge both ways (large-star), or by its larger node (small-star)."""
    edges = edges.select(["u", "v"])
    if both_ways:
        edges = pa.concat_tables([edges, edges.select(["v", "u"]).rename_columns(["u", "v"])])
    else:
        edges = pa.table({"u": pc.max_element_wise(edges["u"], edges["v"]),
                          "v": pc.min_element_wise(edges["u"], edges["v"])})
    return edges.append_column("group", _node_groups(edges["u"], groups))


def _large_star_group(edges: pa.Table) -> pa.Table:
    return _large_star_directed(edges.select(["u", "v"]))


def _small_star_group(edges: pa.Table) -> pa.Table:
    return small_star(edges.select(["u", "v"]))


def _roles(edges: pa.Table, groups: int) -> pa.Table:
    """Each edge as its larger node's row (with the smaller node) and its smaller node's row, keyed by node."""
    high, low = pc.max_element_wise(edges["u"], edges["v"]), pc.min_element_wise(edges["u"], edges["v"])
    table = pa.table({"node": pa.concat_arrays([high.combine_chunks() if isinstance(high, pa.ChunkedArray) else high,
                                                low.combine_chunks() if isinstance(low, pa.ChunkedArray) else low]),
                      "larger": [True] * len(high) + [False] * len(low),
                      "other": pa.concat_arrays([_array(low), _array(high)])})
    return table.append_column("group", _node_groups(table["node"], groups))


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _not_stars(roles: pa.Table) -> pa.Table:
    """How many nodes of a group break the star shape: attached to two smaller nodes, or both leaf and centre."""
    larger = roles.filter(roles["larger"])
    smaller = roles.filter(pc.invert(roles["larger"]))
    leaves = larger.group_by("node").aggregate([("other", "count_distinct")])
    twice = pc.sum(pc.greater(leaves["other_count_distinct"], 1)).as_py() or 0
    both = pc.sum(pc.is_in(leaves["node"], value_set=pc.unique(smaller["node"]))).as_py() or 0
    return pa.table({"violations": [int(twice + both)]})


def find_near_duplicates(work: WorkArea, partitions: list[int], sources: int,
                         cfg: NearDuplicateConfig | None) -> set[int]:
    """Group the corpus's perceptual hashes, record each partition's near-duplicates; the partitions that changed.

    ``cfg`` None or disabled (no hashes were taken): the near-duplicates an earlier run recorded are withdrawn.
    """
    cfg = cfg or NearDuplicateConfig(enabled=False)
    return find_in_corpus(work, NEAR, partitions, sources, _grouper(cfg), enabled=cfg.enabled,
                          driver_max_sources=DRIVER_MAX_SOURCES)


def _grouper(cfg: NearDuplicateConfig) -> DedupKind.Grouper:
    def driver(table: pa.Table) -> pa.Table:
        return group_in_driver(table, cfg)

    def distributed(dataset: ray.data.Dataset, shuffle: int) -> ray.data.Dataset:
        return group_with_ray(dataset, cfg, shuffle)

    return DedupKind.Grouper(driver=driver, distributed=distributed)
