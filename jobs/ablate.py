"""The attention ablation: ``python -m jobs.ablate --config CONFIG.yaml --variants swap,factorized --steps N
--seeds K --out DIR``.

Trains one arm per variant and seed (``DIR/<variant>/seed<k>``, each a normal training output: checkpoints/,
tensorboard/) one after the other in this process, with the same config, initial shared weights and data
order, and writes ``DIR/results.md`` and ``DIR/results.json``. Rerunning skips the arms that finished and
resumes an interrupted one. ``videofactory ablate`` runs the same code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.entry import add_set_argument, run_entry_point
from training.model.config import ATTENTION_VARIANTS

PAPER_VARIANTS = "swap,spatial_query,temporal_query,factorized,full3d"


def add_ablate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ablation (shared by ``videofactory ablate`` and ``python -m jobs.ablate``)."""
    parser.add_argument("--config", required=True, help="YAML training config every arm starts from")
    parser.add_argument("--variants", default=PAPER_VARIANTS,
                        help=f"comma-separated attention variants (default: {PAPER_VARIANTS}; "
                             f"all: {','.join(ATTENTION_VARIANTS)})")
    parser.add_argument("--steps", type=int, required=True, help="optimizer steps per arm")
    parser.add_argument("--seeds", type=int, default=1,
                        help="seeds per variant: the config's seed, seed+1, ... (default: 1)")
    parser.add_argument("--out", required=True, help="directory of the arms (OUT/<variant>/seed<k>) and the tables")
    parser.add_argument("--last", type=int, default=10,
                        help="the final loss is the mean over this many last steps (default: 10)")
    parser.add_argument("--no-eval", action="store_true", help="training metrics only, even if evaluation exists")
    add_set_argument(parser, "optim.lr=1e-4 --set data.batch_size=2", applies_to="every arm's config")


def ablate(args: argparse.Namespace) -> int:
    """Run the ablation as parsed ``args`` say; return the exit code."""
    from jobs.train import absolute_paths
    from training.ablate import evaluate_arm, run_ablation
    from training.config import load_config

    base = absolute_paths(load_config(args.config, args.set))
    base.check()
    results = run_ablation(base, args.variants, args.steps, args.seeds, args.out, last=args.last,
                           evaluator=None if args.no_eval else evaluate_arm)
    print((Path(args.out) / "results.md").read_text())
    print(f"results: {Path(args.out) / 'results.md'} and {Path(args.out) / 'results.json'} "
          f"({len(results['rows'])} arms)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m jobs.ablate", __doc__, add_ablate_arguments, ablate, argv)


if __name__ == "__main__":
    sys.exit(main())
