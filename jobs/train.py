"""Entry point of training: ``python -m jobs.train --config CONFIG.yaml [--set KEY=VALUE ...]``.

- alone: one process (GPU if there is one);
- under ``torchrun --nproc-per-node N -m jobs.train --config ...``: DDP (FSDP2 with ``distributed: fsdp``), one
  process per GPU (gloo on CPU);
- with ``--ray``: the same loop in each worker of Ray Train's ``TorchTrainer``, on the Ray cluster of
  ``RAY_ADDRESS`` (as set inside ``ray job submit -- python -m jobs.train --ray --config ...``) or a
  local one. Paths in the config must then be reachable from every node; relative ones are made
  absolute here first.

A run resumes from the latest checkpoint in the config's ``output`` unless ``--no-resume``.
``videofactory train`` runs the same code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobs.entry import add_set_argument, run_entry_point, setup_logging
from storage import Location
from training.config import TrainConfig, config_from_dict, load_config


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of training (shared by ``videofactory train`` and ``python -m jobs.train``)."""
    parser.add_argument("--config", required=True,
                        help="YAML training config (configs/train.yaml documents every option; "
                             "configs/train_tiny.yaml is a CPU-sized run)")
    parser.add_argument("--output", help="overrides the config's `output` (checkpoints/, tensorboard/)")
    parser.add_argument("--steps", type=int, help="overrides the config's `steps` (total optimizer steps)")
    parser.add_argument("--no-resume", action="store_true",
                        help="start from scratch even if the output directory holds checkpoints")
    parser.add_argument("--ray", action="store_true",
                        help="run with Ray Train's TorchTrainer on RAY_ADDRESS's cluster (or a local Ray)")
    parser.add_argument("--num-workers", type=int, default=1,
                        help="with --ray: training processes (one GPU each when the cluster has GPUs)")
    parser.add_argument("--max-failures", type=int, default=0,
                        help="with --ray: restarts of the workers after a failure; each restart resumes from the "
                             "latest checkpoint in the output directory (default: 0)")
    add_set_argument(parser, "optim.lr=1e-4 --set data.batch_size=2")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config: the --config file, then each --set, then --output and --steps; paths made absolute and
    checked. Raises ValueError (or FileNotFoundError for a missing file) saying what to fix."""
    cfg = absolute_paths(load_config(args.config, args.set, output=args.output, steps=args.steps))
    cfg.check()
    return cfg


def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """The config with corpus, model, evaluation and output paths made absolute (workers may run elsewhere)."""
    data = cfg.to_dict()
    for corpus in data["data"]["corpora"]:
        corpus["path"] = Location(corpus["path"]).uri  # absolute when local; s3://... as it is
        corpus["latents"] = Location(corpus["latents"]).uri if corpus["latents"] else ""
    if data["eval"]["corpus"]:
        data["eval"]["corpus"] = Location(data["eval"]["corpus"]).uri
    for section, name in (("model", "text_encoder"), ("model", "tokenizer"), ("model", "vae"), ("model", "init_from"),
                          ("eval", "clip_model"), ("eval", "i3d_weights")):
        data[section][name] = os.path.abspath(data[section][name]) if data[section][name] else ""
    data["output"] = os.path.abspath(data["output"])
    return config_from_dict(data)


def run_training(cfg: TrainConfig, resume: bool = True) -> list[float]:
    """Train in this process (joining torchrun's or Ray Train's process group when there is one)."""
    import torch.distributed as dist

    from training.distributed import setup_distributed
    from training.trainer import Trainer

    env = setup_distributed()
    try:
        return Trainer(cfg, env, resume=resume).train()
    finally:
        if env.owns_group:
            dist.destroy_process_group()


def _ray_worker(loop_config: dict[str, Any]) -> None:
    """What each Ray Train worker runs: the ordinary loop, in the process group Ray set up."""
    setup_logging()
    run_training(config_from_dict(loop_config["config"]), resume=loop_config["resume"])


def train_on_ray(cfg: TrainConfig, num_workers: int, resume: bool = True, max_failures: int = 0) -> None:
    """Run the loop in ``num_workers`` Ray Train workers (a GPU each when the cluster has GPUs).

    Ray restarts failed workers up to ``max_failures`` times; they resume from the output directory's
    latest checkpoint (so on a multi-node cluster ``output`` must be shared storage).
    """
    from jobs.local_cluster import init_ray, loopback_only_unless

    address = os.environ.get("RAY_ADDRESS")
    loopback_only_unless(address)  # before anything imports Ray, which reads the switch at its first import
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    init_ray(address)  # RAY_ADDRESS, or a local Ray on loopback only
    use_gpu = ray.cluster_resources().get("GPU", 0) >= num_workers
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"config": cfg.to_dict(), "resume": resume},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name="videofactory-train", storage_path=str(Path(cfg.output) / "ray"),
                             failure_config=FailureConfig(max_failures=max_failures)),
    )
    trainer.fit()


def train(args: argparse.Namespace) -> int:
    """Run training as parsed ``args`` say; return the exit code."""
    cfg = config_from_args(args)
    if args.ray:
        train_on_ray(cfg, args.num_workers, resume=not args.no_resume, max_failures=args.max_failures)
    else:
        run_training(cfg, resume=not args.no_resume)
    print(f"checkpoints: {Path(cfg.output) / 'checkpoints'}\ntensorboard: {Path(cfg.output) / 'tensorboard'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m jobs.train", __doc__, add_train_arguments, train, argv)


if __name__ == "__main__":
    sys.exit(main())
