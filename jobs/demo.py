"""The README's main command: build a real corpus with a real Ray cluster on this machine.

Starts a local Ray head on loopback, submits the curation job to it with ``ray job submit`` over
the shared test videos (``../shared/testvideos``; where that folder is absent, over a few videos
made here with ffmpeg), validates the corpus, prints where it is, and stops the head.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from curation.config import load_config
from curation.sample_videos import make_sample_videos
from jobs.local_cluster import LocalRayCluster
from shards.reader import read_manifest
from shards.validate import validate

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


def write_job_config(outputs: Path, input_dir: Path, corpus: Path) -> Path:
    """The job's YAML: the documented defaults with absolute input and output paths."""
    cfg = load_config(ROOT / "configs" / "default.yaml", input=str(input_dir.resolve()), output=str(corpus.resolve()))
    path = outputs / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outputs", default=str(ROOT / "outputs"), help="where the corpus, config and Ray logs go")
    parser.add_argument("--port", type=int, default=6379, help="Ray head's GCS port")
    parser.add_argument("--dashboard-port", type=int, default=8265, help="Ray dashboard / job API port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    outputs = Path(args.outputs).resolve()
    outputs.mkdir(parents=True, exist_ok=True)
    corpus = outputs / "demo-corpus"
    config = write_job_config(outputs, demo_input(outputs), corpus)
    with LocalRayCluster(outputs / "ray", port=args.port, dashboard_port=args.dashboard_port) as cluster:
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
          f"  index: {corpus / 'index.parquet'}\n  rejections: {corpus / 'rejections.parquet'} "
          f"({counts['rejections']})")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
