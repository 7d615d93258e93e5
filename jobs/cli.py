"""The ``videofactory`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs.ablate import ablate, add_ablate_arguments
from jobs.curate import add_curate_arguments, curate
from jobs.encode import __doc__ as encode_doc
from jobs.encode import add_encode_arguments, encode
from jobs.entry import run_handler
from jobs.evaluate import __doc__ as evaluate_doc
from jobs.evaluate import add_evaluate_arguments, evaluate
from jobs.sample import add_sample_arguments, sample
from jobs.stats import add_stats_arguments, stats
from jobs.train import add_train_arguments, train
from jobs.verify_sources import __doc__ as verify_doc
from jobs.verify_sources import add_verify_arguments, verify


def validate(args: argparse.Namespace) -> int:
    from shards.validate import validate as check

    report = check(args.corpus)
    print(report.summary())
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videofactory",
        description="Build HD text-video corpora with Ray Data (curate), check them (validate).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    curate_parser = commands.add_parser(
        "curate",
        help="run the curation pipeline on a local Ray (or on RAY_ADDRESS when set)",
        description="Download, probe, split into scenes, extract clips and write WebDataset shards. "
                    "Rerunning on the same --output resumes where an earlier run stopped.",
    )
    add_curate_arguments(curate_parser)
    curate_parser.set_defaults(func=curate)
    validate_parser = commands.add_parser(
        "validate",
        help="check a corpus: shards open, samples complete, everything matches index and manifest",
        description="Exit status 0 when the corpus is consistent, 1 with a list of problems otherwise.",
    )
    validate_parser.add_argument("corpus", help="corpus written by `videofactory curate`: a directory or s3://bucket/prefix")
    validate_parser.set_defaults(func=validate)
    stats_parser = commands.add_parser(
        "stats", help="dataset statistics: the funnel, distributions, scores, captions, throughput (JSON + HTML)",
        description="Summarise a corpus from its index, rejections and manifest (never the videos) into "
                    "CORPUS/stats/stats.json and a self-contained CORPUS/stats/report.html.",
    )
    add_stats_arguments(stats_parser)
    stats_parser.set_defaults(func=stats)
    verify_parser = commands.add_parser(
        "verify-sources", help="re-check every source of a corpus (HEAD, or --hash: download and compare sha256), "
                               "bounded in rate and concurrency: a status per source and a summary",
        description=verify_doc, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_verify_arguments(verify_parser)
    verify_parser.set_defaults(func=verify)
    train_parser = commands.add_parser(
        "train", help="train the swap-attention video diffusion model on corpora (DDP under torchrun, or --ray)",
        description="Stream the corpora's shards and train; resumes from the latest checkpoint in the output.",
    )
    add_train_arguments(train_parser)
    train_parser.set_defaults(func=train)
    encode_parser = commands.add_parser(
        "encode", help="precompute a corpus's VAE latents and caption embeddings for a training config (Ray Data, "
                       "GPU actors when there are GPUs); the trainer then reads them instead of encoding every step",
        description=encode_doc, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_encode_arguments(encode_parser)
    encode_parser.set_defaults(func=encode)
    sample_parser = commands.add_parser(
        "sample", help="generate an mp4 from a trained checkpoint and a prompt (DDIM, classifier-free guidance)",
        description="Denoise latents with DDIM and classifier-free guidance, decode them with the VAE, write mp4.",
    )
    add_sample_arguments(sample_parser)
    sample_parser.set_defaults(func=sample)
    evaluate_parser = commands.add_parser(
        "evaluate", help="metrics of a checkpoint: held-out loss per timestep bucket, temporal consistency, CLIPSIM, "
                         "FVD (metrics.json, metrics.md, TensorBoard)",
        description=evaluate_doc, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_evaluate_arguments(evaluate_parser)
    evaluate_parser.set_defaults(func=evaluate)
    ablate_parser = commands.add_parser(
        "ablate", help="the attention ablation: one training run per variant and seed, then a results table",
        description="Train every attention variant x seed from one config (same shared initial weights, same data "
                    "order) in OUT/<variant>/seed<k>, then write OUT/results.md and OUT/results.json. Rerunning "
                    "skips finished arms.",
    )
    add_ablate_arguments(ablate_parser)
    ablate_parser.set_defaults(func=ablate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_handler(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
