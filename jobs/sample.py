"""Sample a video from a trained checkpoint: ``python -m jobs.sample --checkpoint DIR --prompt TEXT``.

DDIM with classifier-free guidance, latents decoded by the checkpoint's VAE, written as an mp4.
``videofactory sample`` runs the same code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs.entry import add_set_argument, run_entry_point


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint directory (…/checkpoints/step-N) or a training output directory "
                             "(its latest checkpoint is used)")
    parser.add_argument("--prompt", required=True, help="the caption to generate a video for")
    parser.add_argument("--out", default="sample.mp4", help="mp4 to write (default: sample.mp4)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default: 50)")
    parser.add_argument("--guidance", type=float, default=7.5,
                        help="classifier-free guidance scale; 1 turns guidance off (default: 7.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default: 0)")
    parser.add_argument("--frames", type=int, help="frames to generate (default: the training config's)")
    parser.add_argument("--fps", type=float,
                        help="frame rate of the video: the mp4's, and what a model trained with fps conditioning "
                             "is asked for (default: the training config's data.fps, else 8)")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    add_set_argument(parser, "model.vae=/new/place/vae",
                     applies_to="the training config saved in the checkpoint, for this sample only (where the "
                                "encoders are now, or data.width and data.height for another size; model.unet "
                                "must stay as trained)", order="")


def sample(args: argparse.Namespace) -> int:
    from training.checkpoint import load_checkpoint_config, resolve_checkpoint
    from training.sample import frame_rate, generate, write_mp4

    if args.steps < 1:
        raise ValueError("--steps must be at least 1")
    if args.fps is not None and args.fps <= 0:
        raise ValueError("--fps must be positive")
    fps = frame_rate(load_checkpoint_config(resolve_checkpoint(args.checkpoint), args.set), args.fps)
    frames = generate(args.checkpoint, args.prompt, steps=args.steps, guidance=args.guidance, seed=args.seed,
                      frames=args.frames, use_ema=not args.no_ema, overrides=args.set, fps=fps)
    path = write_mp4(frames, args.out, fps)
    print(f"wrote {path} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]}, {fps:g} fps)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m jobs.sample", __doc__, add_sample_arguments, sample, argv)


if __name__ == "__main__":
    sys.exit(main())
