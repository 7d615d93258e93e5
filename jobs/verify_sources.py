"""Entry point of the source check: ``python -m jobs.verify_sources CORPUS [--hash] [--out DIR] [--set KEY=VALUE]``.

Re-checks every source of a corpus (HEAD requests, file and object metadata; with --hash a download and a
sha256 comparison) within a rate and a concurrency bound, and writes ``availability/pNNNNN.parquet`` (one
status row per source) and ``availability/summary.json``; the summary is printed as a table. It needs no
Ray: under ``ray job submit`` it runs on the head. ``videofactory verify-sources`` runs the same code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs.entry import add_set_argument, run_entry_point


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the source check (shared by ``videofactory verify-sources`` and ``python -m jobs.verify_sources``)."""
    parser.add_argument("corpus", help="corpus written by `videofactory curate`: a directory or an object-store "
                                       "prefix (its index/ and rejections/ name the sources)")
    parser.add_argument("--out", metavar="DIR",
                        help="where to write the status files and summary.json (default: CORPUS/availability)")
    parser.add_argument("--hash", action="store_true", default=None,
                        help="download every source to a scratch file (removed at once) and compare its sha256 with "
                             "the recorded source_sha256: unchanged or changed. Without it nothing is downloaded")
    parser.add_argument("--resume", action="store_true", default=None,
                        help="keep the status files an earlier run on the same --out wrote (one per partition, "
                             "written as each is checked) and check only the other partitions")
    parser.add_argument("--concurrency", type=int, metavar="N", help="sources checked at once (default 16)")
    parser.add_argument("--rate", type=float, metavar="R",
                        help="requests per second, all sources together (default 20; a token bucket)")
    add_set_argument(parser, "download.timeout_s=10 --set burst=1", "the check's settings (concurrency, rate, burst, "
                     "hash, resume, and download.*: by default the corpus's own download settings)",
                     order="Applied after the corpus's settings; --hash, --resume, --concurrency and --rate win "
                           "over it.")


def verify(args: argparse.Namespace) -> int:
    """Check the sources of ``args.corpus``; print the summary table; return the exit code."""
    from curation.verify import summary_table, verify_config, verify_sources

    cfg = verify_config(args.corpus, args.set, hash=args.hash, resume=args.resume, concurrency=args.concurrency,
                        rate=args.rate)
    summary = verify_sources(args.corpus, cfg, out=args.out)
    print(summary_table(summary))
    print(f"status per source: {summary['out']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m jobs.verify_sources", __doc__, add_verify_arguments, verify, argv)


if __name__ == "__main__":
    sys.exit(main())
