"""Entry point of the statistics job: ``python -m jobs.stats CORPUS [--compare OTHER] [--out DIR]``.

It reads only ``index/``, ``rejections/`` and ``manifest.json`` and needs no Ray: ``ray job submit
--working-dir . -- python -m jobs.stats s3://bucket/corpus`` simply runs it on the cluster's head
(where the corpus must be reachable). Corpora and ``--out`` may be local directories or object-store
prefixes; the output defaults to ``CORPUS/stats``, written into the store when the corpus is there.
``videofactory stats`` runs the same code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs.entry import run_entry_point


def add_stats_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the statistics job (shared by ``videofactory stats`` and ``python -m jobs.stats``)."""
    parser.add_argument("corpus", help="corpus written by `videofactory curate`: a directory or an object-store "
                                       "prefix such as s3://bucket/corpus (holds index/ and manifest.json)")
    parser.add_argument("--compare", metavar="OTHER",
                        help="a second corpus to set beside the first in stats.json and report.html, e.g. the "
                             "same input curated with another threshold")
    parser.add_argument("--out", metavar="DIR",
                        help="where to write stats.json and report.html: a directory or an object-store prefix "
                             "(default: CORPUS/stats, in the object store when the corpus is there; give a "
                             "local DIR to read the report without the store)")
    parser.add_argument("--no-gallery", dest="gallery", action="store_false",
                        help="leave the gallery (thumbnail strips of sample kept and rejected clips, which reads a "
                             "few clips from the shards and work/clips) out of report.html")


def stats(args: argparse.Namespace) -> int:
    """Write the statistics of ``args.corpus``; print where they are; return the exit code."""
    from stats.report import REPORT_FILE, STATS_FILE, write_report

    out = write_report(args.corpus, compare=args.compare, out=args.out, gallery=args.gallery)
    print(f"statistics: {out / STATS_FILE}")
    print(f"report:     {out / REPORT_FILE}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m jobs.stats", __doc__, add_stats_arguments, stats, argv)


if __name__ == "__main__":
    sys.exit(main())
