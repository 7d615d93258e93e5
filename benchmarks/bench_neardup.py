"""The near-duplicate grouping's scaling: 10^4..10^6 clips of synthetic perceptual hashes, wall and peak memory.

Each size runs in a fresh process (so its peak RSS is its own). A clip has 9 frame hashes drawn around one
random hash per clip (a few bits flipped per frame, as frames of one shot are alike); 1 % of the clips are
planted near-duplicates of another clip (4 bits flipped per frame, every other frame dropped, as a copy
played twice as fast). The grouping is ``curation.neardup.group_in_driver`` (LSH, verification,
components) at the default settings, or ``group_with_ray`` with ``--ray``. The baseline, in the same
process, groups the same clips exactly (identical frame hashes, a pyarrow ``group_by``): what exact
matching of the hashes alone would cost. Recall is the share of planted pairs found.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def synthetic(clips: int, seed: int = 0):
    """``clips`` clips' nodes and frame hashes, with 1 % planted near-duplicates; and the planted pairs."""
    import numpy as np
    import pyarrow as pa

    from curation.neardup import PHASHES_SCHEMA, node_id

    rng = np.random.default_rng(seed)
    planted = clips // 100
    originals = clips - planted
    base = rng.integers(0, 2**63, originals, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    frames = np.repeat(base[:, None], 9, axis=1)
    frames ^= _flips(rng, (originals, 9), 3)
    sources = rng.choice(originals, planted, replace=False)
    copies = (frames[sources] ^ _flips(rng, (planted, 9), 4))[:, ::2]
    hashes = [row.tolist() for row in frames] + [row.tolist() for row in copies]
    nodes = [node_id(f"{i:016x}_0000", i % 1024, 1280, 720, 5.0) for i in range(clips)]
    table = pa.table({"node": nodes, "hashes": pa.array(hashes, pa.list_(pa.uint64()))}, schema=PHASHES_SCHEMA)
    pairs = {(f"{originals + k:016x}_0000", f"{s:016x}_0000") for k, s in enumerate(sources)}
    return table, pairs


def _flips(rng, shape: tuple[int, int], bits: int):
    """Masks of ``bits`` random bits each (fewer where two draws coincide)."""
    import numpy as np

    masks = np.zeros(shape, dtype=np.uint64)
    for _ in range(bits):
        masks |= np.uint64(1) << rng.integers(0, 64, shape).astype(np.uint64)
    return masks


def one(clips: int, ray_path: bool) -> dict:
    """Baseline and grouping of ``clips`` synthetic clips in this process: seconds, peak RSS, recall."""
    if ray_path:  # before anything imports ray (the local Ray must come up on loopback only)
        from jobs.local_cluster import start_local_ray

        start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    import pyarrow as pa
    import pyarrow.compute as pc

    from curation.config import NearDuplicateConfig
    from curation.neardup import group_in_driver

    table, planted = synthetic(clips)
    cfg = NearDuplicateConfig(enabled=True)
    started, cpu = time.perf_counter(), time.process_time()
    pa.table({"h": pc.list_flatten(table["hashes"])}).group_by("h").aggregate([("h", "count")])
    baseline, baseline_cpu = time.perf_counter() - started, time.process_time() - cpu
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started, cpu = time.perf_counter(), time.process_time()
    if ray_path:
        import ray

        from curation.neardup import group_with_ray

        decisions = pa.Table.from_pylist(
            group_with_ray(ray.data.from_arrow(table).repartition(8), cfg, 8).take_all())
    else:
        decisions = group_in_driver(table, cfg)
    grouping, grouping_cpu = time.perf_counter() - started, time.process_time() - cpu
    found = set(zip(decisions["key"].to_pylist(), decisions["duplicate_of"].to_pylist(), strict=True))
    return {"clips": clips, "baseline_s": baseline, "grouping_s": grouping, "baseline_cpu_s": baseline_cpu,
            "grouping_cpu_s": grouping_cpu, "rss_before_mb": rss_before / 1024,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "recall": len(found & planted) / max(1, len(planted)), "decisions": decisions.num_rows,
            "planted": len(planted)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="clip counts, comma-separated")
    parser.add_argument("--ray", action="store_true", help="the Ray Data path (a local Ray of 2 CPUs)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a size, in this process (the child's part)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.ray)))
        return 0
    path = "ray" if args.ray else "driver"
    print("| clips | path | exact grouping (baseline) wall / CPU s | grouping wall / CPU s | CPU ratio | "
          "peak RSS MB (data before) | planted pairs found |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        command = [sys.executable, __file__, "--one", str(size)] + (["--ray"] if args.ray else [])
        out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=900).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {size:,} | {path} | {r['baseline_s']:.2f} / {r['baseline_cpu_s']:.2f} | {r['grouping_s']:.2f} / "
              f"{r['grouping_cpu_s']:.2f} | {r['grouping_cpu_s'] / max(r['baseline_cpu_s'], 1e-3):.0f} | "
              f"{r['peak_rss_mb']:.0f} ({r['rss_before_mb']:.0f}) | {round(r['recall'] * r['planted'])} / "
              f"{r['planted']} ({r['recall']:.3f}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
