"""The README's main command: build a real corpus with a real Ray cluster on this machine.

Starts a local Ray head on loopback, submits the curation job (the documented defaults, filters
included) to it with ``ray job submit`` over the shared test videos (``../shared/testvideos``; where
that folder is absent, over a few videos made here with ffmpeg), stops the head, validates the
corpus, prints where it is and what the filters rejected, and writes its statistics report.
Then it trains a few steps of the tiny U-Net on the corpus, with UNTRAINED tiny text encoder and VAE,
and samples one video (``demo.train``): a test of the machinery, not a video model.

Captions come from BLIP-2 OPT-2.7B when its weights are at the documented ``models/blip2-opt-2.7b``.
Without them the demo captions with a tiny untrained BLIP-2 (``demo.tiny_blip2``) so that every
stage still runs, says so in its output, and every clip's ``caption_model`` names that model as
untrained: its captions are meaningless.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from curation.caption import DEFAULT_REPO, check_weights
from curation.config import DEFAULT_CAPTION_MODEL, load_config
from demo.sample_videos import make_sample_videos
from demo.tiny_blip2 import TINY_MODEL_NAME, build_tiny_blip2
from demo.train import train_and_sample
from jobs.local_cluster import LocalRayCluster
from shards.layout import index_location, rejections_location
from shards.reader import read_manifest
from shards.validate import validate
from stats.report import REPORT_FILE, STATS_FILE, write_report

ROOT = Path(__file__).resolve().parent.parent
SHARED_VIDEOS = ROOT.parent / "shared" / "testvideos"

log = logging.getLogger("videofactory.demo")


def demo_input(outputs: Path) -> Path:
    """The shared test videos, or sample videos made with ffmpeg when they are not here."""
    if SHARED_VIDEOS.is_dir():
        return SHARED_VIDEOS
    log.info("%s not found: making sample videos with ffmpeg instead", SHARED_VIDEOS)
    videos = outputs / "sample_videos"
    make_sample_videos(videos)
    return videos


def caption_model(outputs: Path) -> tuple[Path, bool]:
    """(model directory, whether it is real): the BLIP-2 weights if downloaded, else the tiny untrained model."""
    try:
        return check_weights(ROOT / DEFAULT_CAPTION_MODEL), True
    except FileNotFoundError:
        log.warning("no BLIP-2 weights in %s: captioning with a tiny UNTRAINED model instead, whose captions are "
                    "meaningless (get the real ones with `hf download %s --local-dir %s`)",
                    ROOT / DEFAULT_CAPTION_MODEL, DEFAULT_REPO, DEFAULT_CAPTION_MODEL)
        return build_tiny_blip2(outputs / "tiny-blip2-untrained"), False


def write_job_config(outputs: Path, input_dir: Path, corpus: Path, model: Path) -> Path:
    """The job's YAML: the documented defaults with absolute input, output and caption model paths."""
    cfg = load_config(ROOT / "configs" / "default.yaml", input=str(input_dir.resolve()), output=str(corpus.resolve()))
    cfg.caption.model_path = str(model)
    path = outputs / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path


def print_filter_funnel(counts: dict) -> None:
    """What the default filters (HD, 16:9, moving, no burned-in text) rejected, by reason."""
    rejected = {reason.removeprefix("filter/"): n for reason, n in counts["rejections_by_reason"].items()
                if reason.startswith("filter/")}
    listed = ", ".join(f"{reason} {n}" for reason, n in sorted(rejected.items(), key=lambda item: -item[1]))
    print(f"  filters (the defaults: HD, 16:9, moving, no burned-in text): kept {counts['clips']} of "
          f"{counts['clips'] + sum(rejected.values())} clips; rejected: {listed or 'none'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.curate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outputs", default=str(ROOT / "outputs"), help="where the corpus, config and Ray logs go")
    parser.add_argument("--port", type=int, default=6379, help="Ray head's GCS port")
    parser.add_argument("--dashboard-port", type=int, default=8265, help="Ray dashboard / job API port")
    parser.add_argument("--train-steps", type=int, default=20,
                        help="steps of the tiny model (untrained encoders) to train on the corpus before sampling "
                             "one video; 0 skips training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    outputs = Path(args.outputs).resolve()
    outputs.mkdir(parents=True, exist_ok=True)
    corpus = outputs / "demo-corpus"
    model, real_model = caption_model(outputs)
    config = write_job_config(outputs, demo_input(outputs), corpus, model)
    # One node, so that every port of the cluster (GCS, raylet, agents, job API) listens on loopback only.
    with LocalRayCluster(outputs / "ray", port=args.port, dashboard_port=args.dashboard_port,
                         multi_node=False) as cluster:
        log.info("submitting the curation job to %s", cluster.dashboard_url)
        job = cluster.submit(["python", "-m", "jobs.curate", "--config", str(config)], ROOT, stream=True)
    if job.returncode != 0:
        log.error("the curation job failed (exit %d); Ray's logs are in %s", job.returncode, outputs / "ray")
        return 1
    report = validate(corpus)
    print(report.summary())
    counts = read_manifest(corpus)["counts"]
    print(f"\ncorpus: {corpus}\n  {counts['clips']} clips ({counts['clip_seconds']:.0f} s) from "
          f"{counts['sources_with_clips']}/{counts['sources']} sources in {corpus / 'shards'}\n"
          f"  index: {index_location(corpus)}\n  rejections: {rejections_location(corpus)} "
          f"({counts['rejections']})")
    print_filter_funnel(counts)
    statistics = write_report(corpus)
    print(f"  statistics: {statistics / REPORT_FILE} (open it in a browser), {statistics / STATS_FILE}")
    if real_model:
        print(f"  captions: BLIP-2 from {model}")
    else:
        print(f"  captions: made by a tiny UNTRAINED test model ({TINY_MODEL_NAME}); they are meaningless.\n"
              f"  For real BLIP-2 captions: hf download {DEFAULT_REPO} --local-dir {DEFAULT_CAPTION_MODEL}")
    if report.ok and args.train_steps > 0:
        train_and_sample(corpus, outputs, steps=args.train_steps)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
