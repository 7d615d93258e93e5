"""Entry point of the statistics job: ``python -m jobs.stats CORPUS_DIR [--compare OTHER_DIR] [--out DIR]``.

It reads only ``index.parquet``, ``rejections.parquet`` and ``manifest.json`` and needs no Ray:
``ray job submit --working-dir . -- python -m jobs.stats /shared/corpus`` simply runs it on the
cluster's head (where the corpus path must be reachable). ``videofactory stats`` runs the same code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs.entry import run_entry_point


def add_stats_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the statistics job (shared by ``videofactory stats`` and ``python -m jobs.stats``)."""
    parser.add_argument("corpus", help="corpus directory written by `videofactory curate` (holds index.parquet)")
    parser.add_argument("--compare", metavar="OTHER_DIR",
                        help="a second corpus to set beside the first in stats.json and report.html, e.g. the "
                             "same input curated with another threshold")
    parser.add_argument("--out", metavar="DIR",
                        help="where to write stats.json and report.html (default: CORPUS/stats)")


def stats(args: argparse.Namespace) -> int:
    """Write the statistics of ``args.corpus``; print where they are; return the exit code."""
    from stats.report import REPORT_FILE, STATS_FILE, write_report

    out = write_report(args.corpus, compare=args.compare, out=args.out)
    print(f"statistics: {out / STATS_FILE}")
    print(f"report:     {out / REPORT_FILE}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m jobs.stats", __doc__, add_stats_arguments, stats, argv)


if __name__ == "__main__":
    sys.exit(main())
