"""Entry point of the encode job: ``python -m jobs.encode --config TRAIN.yaml [--corpus DIR] [--set KEY=VALUE ...]``.

Precomputes the VAE posteriors and caption embeddings of a corpus (``training.encode``) as the training
config says (frames, stride or fps, size or bucket table, encoders) into sidecar shards that the trainer
then reads instead of encoding every step. Runs as a Ray Data job: ``ray job submit ... -- python -m
jobs.encode --config ...`` on a cluster (GPU actors where there are GPUs), or a local Ray (or
``RAY_ADDRESS``) otherwise. Rerunning resumes: shards already encoded are not encoded again.
``videofactory encode`` runs the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from jobs.entry import add_set_argument, log, run_entry_point
from storage import Location
from training.config import CorpusConfig, TrainConfig, load_config


def add_encode_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the encode job (shared by ``videofactory encode`` and ``python -m jobs.encode``)."""
    parser.add_argument("--config", required=True,
                        help="the YAML training config the latents are for (its data and model sections decide them)")
    parser.add_argument("--corpus", help="corpus to encode (a directory or s3://bucket/prefix); default: every corpus "
                                         "of the config's data.corpora")
    parser.add_argument("--out", help="where the sidecars go (default: the corpus's data.corpora[].latents, else "
                                      "CORPUS/latents/<digest>/, where the trainer looks); only with one corpus")
    parser.add_argument("--actors", type=int, help="encoder actors (default: one per GPU of the cluster, else 1)")
    add_set_argument(parser, "data.frames=8 --set data.width=512")


def corpora_from_args(args: argparse.Namespace) -> tuple[TrainConfig, list[CorpusConfig]]:
    """The config (paths absolute) and the corpora to encode: ``--corpus`` (with its entry of the config's
    ``data.corpora`` when it has one: its ``frames`` and ``latents`` count), else all of them."""
    from jobs.train import absolute_paths

    cfg = load_config(args.config, args.set)
    if args.corpus:
        wanted = Location(args.corpus).uri
        listed = [c for c in cfg.data.corpora if Location(c.path).uri == wanted]
        if not listed:
            cfg.data.corpora = [*cfg.data.corpora, CorpusConfig(path=args.corpus)]
    cfg = absolute_paths(cfg)
    cfg.check()
    corpora = [c for c in cfg.data.corpora if not args.corpus or c.path == Location(args.corpus).uri]
    if args.out and len(corpora) > 1:
        raise ValueError(f"--out names one output but the config lists {len(corpora)} corpora: add --corpus")
    return cfg, corpora


def encode(args: argparse.Namespace) -> int:
    """Run the encode job described by parsed ``args``; return the exit code."""
    cfg, corpora = corpora_from_args(args)  # first: a mistake in the config is reported before Ray starts
    from jobs.local_cluster import init_ray, loopback_only_unless

    address = os.environ.get("RAY_ADDRESS")
    loopback_only_unless(address)  # before anything imports Ray, which reads the switch at its first import
    import ray

    from training.encode import encode_corpus, run_on_ray

    init_ray(address, log_to_driver=True)
    log.info("Ray cluster: %d CPUs, %d GPUs", int(ray.cluster_resources().get("CPU", 0)),
             int(ray.cluster_resources().get("GPU", 0)))
    for corpus in corpora:
        meta = encode_corpus(cfg, corpus, lambda c, work: run_on_ray(c, work, args.actors), out=args.out)
        print(f"sidecars of {meta['corpus']}: {meta['where']}  ({len(meta['encoded_now'])} of {len(meta['shards'])} "
              f"shards encoded now)\n{json.dumps({k: meta[k] for k in ('counts', 'buckets', 'damaged')})}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m jobs.encode", __doc__, add_encode_arguments, encode, argv)


if __name__ == "__main__":
    sys.exit(main())
