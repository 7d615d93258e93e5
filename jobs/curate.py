"""Entry point of the curation job: ``python -m jobs.curate --config CONFIG.yaml``.

This is what ``ray job submit ... -- python -m jobs.curate --config ...`` runs on a cluster; inside
a Ray job ``ray.init()`` joins that cluster, and outside one it starts a local Ray (or joins
``RAY_ADDRESS``). ``videofactory curate`` runs the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from curation.config import STAGES, load_config
from jobs.entry import log, run_entry_point
from storage import Location


def add_curate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the curation job (shared by ``videofactory curate`` and ``python -m jobs.curate``)."""
    parser.add_argument("--config", help="YAML config (see configs/default.yaml for every option and its default)")
    parser.add_argument("--input", help="manifest (.parquet, .csv, .jsonl, .json, .txt: one URL or path a line) "
                                        "or a directory of videos; overrides the config's `input`")
    parser.add_argument("--output", help="corpus directory; also where stages persist results so a rerun resumes; "
                                         "must be a path every node of the cluster can reach")
    parser.add_argument("--stages", help=f"comma-separated contiguous stages to run (default: all of "
                                         f"{','.join(STAGES)}); e.g. download,probe,split in one job and "
                                         "extract,filter,caption,write in another")


def curate(args: argparse.Namespace) -> int:
    """Run the curation job described by parsed ``args``; return the exit code."""
    import ray

    from curation.pipeline import run_curation

    cfg = load_config(args.config, input=args.input, output=args.output, stages=args.stages)
    cfg.validate()
    cfg.input, cfg.output = (str(Location(p)) for p in (cfg.input, cfg.output))  # absolute, or a store URI
    # Inside `ray job submit` RAY_ADDRESS names the cluster; otherwise start a private local Ray
    # ("local"), rather than joining whatever cluster a stale address file on this machine names.
    ray.init(address=os.environ.get("RAY_ADDRESS") or "local", log_to_driver=True)
    log.info("Ray cluster: %d CPUs on %d node(s)", int(ray.cluster_resources().get("CPU", 0)), len(ray.nodes()))
    summary = run_curation(cfg)
    print(f"corpus: {cfg.output}")
    if summary.corpus:
        print(json.dumps(summary.corpus, indent=2))
    print(f"done in {summary.seconds:.1f} s (stages: {','.join(summary.stages)})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m jobs.curate", __doc__, add_curate_arguments, curate, argv)


if __name__ == "__main__":
    sys.exit(main())
