"""Entry point of the curation job: ``python -m jobs.curate --config CONFIG.yaml [--set KEY=VALUE ...]``.

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

from curation.config import STAGES, CurationConfig, load_config
from jobs.entry import add_set_argument, log, run_entry_point
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
    parser.add_argument("--dashboard", action="store_true",
                        help="start the dashboard of the local Ray this command starts when RAY_ADDRESS is unset "
                             "(on 127.0.0.1 only; Ray prints its URL), to watch the job. Off by default: its "
                             "processes cost about 4 CPU seconds of start-up (benchmarks/bench_startup.py). A "
                             "cluster named by RAY_ADDRESS keeps its own")
    add_set_argument(parser, "filter.text.max_area=0.01 --set caption.enabled=false")


def config_from_args(args: argparse.Namespace) -> CurationConfig:
    """The job's config: the --config file (or the defaults), then each --set, then --input, --output, --stages;
    checked, with input and output made absolute (or store URIs). Raises ValueError saying what to fix."""
    cfg = load_config(args.config, args.set, input=args.input, output=args.output, stages=args.stages)
    cfg.check()
    cfg.input, cfg.output = (str(Location(p)) for p in (cfg.input, cfg.output))  # absolute, or a store URI
    return cfg


def curate(args: argparse.Namespace) -> int:
    """Run the curation job described by parsed ``args``; return the exit code."""
    cfg = config_from_args(args)  # first: a mistake in the config is reported before Ray starts

    # Inside `ray job submit` RAY_ADDRESS names the cluster; otherwise start a private local Ray on loopback
    # only, rather than join whatever cluster a stale address file on this machine names.
    from jobs.local_cluster import init_ray, loopback_only_unless

    address = os.environ.get("RAY_ADDRESS")
    loopback_only_unless(address)  # before anything imports Ray, which reads the switch at its first import
    import ray

    from curation.pipeline import run_curation

    if address:
        log.info("joining the Ray cluster at %s", address)
    else:
        log.info("starting a private local Ray (loopback only)")
    init_ray(address, dashboard=args.dashboard, log_to_driver=True)
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
