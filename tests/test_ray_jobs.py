"""The curation job as users run it: submitted with the `ray job submit` CLI to real Ray clusters.

Each cluster here is real (``ray start`` processes on loopback addresses), started and stopped by
the test through its own pids. The input is the project's sample videos plus one bad file, so the
job exercises clips and rejections alike.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from curation.config import load_config
from jobs.local_cluster import LocalRayCluster
from shards.reader import read_index, read_manifest
from shards.validate import validate
from tests import media
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job_input(sample_videos: Path, tmp_path_factory) -> Path:
    """Sample videos and one truncated file, in a folder of their own."""
    folder = tmp_path_factory.mktemp("job-input")
    for video in sample_videos.iterdir():
        (folder / video.name).symlink_to(video)
    media.truncated(folder)
    return folder


def job_config(input_dir: Path, output: Path) -> Path:
    """A job YAML with absolute paths (the job runs from its uploaded copy of the project)."""
    cfg = load_config(None, input=str(input_dir), output=str(output))
    cfg.caption.enabled = False  # no weights here; tests/test_caption.py runs the stage on a tiny model
    cfg.filter.enabled = False  # tests/test_filters.py runs the filters
    path = output.parent / f"{output.name}.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def curate_entrypoint(config: Path) -> list[str]:
    return ["python", "-m", "jobs.curate", "--config", str(config)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node cluster: head on 127.0.0.2 with 2 CPUs, job API on 127.0.0.1:8281."""
    with LocalRayCluster(tmp_path_factory.mktemp("ray-one"), port=6381, dashboard_port=8281, head_cpus=2) as c:
        yield c


@pytest.fixture(scope="module")
def baseline(cluster: LocalRayCluster, job_input: Path, tmp_path_factory) -> Path:
    """A corpus made by one uninterrupted job."""
    output = tmp_path_factory.mktemp("baseline") / "corpus"
    result = cluster.submit(curate_entrypoint(job_config(job_input, output)), REPO_ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output


def sorted_index(corpus: Path) -> pa.Table:
    return read_index(corpus).sort_by("key")


def test_submitted_job_builds_a_valid_corpus(baseline: Path):
    report = validate(baseline)
    assert report.ok, report.summary()
    counts = read_manifest(baseline)["counts"]
    assert counts["clips"] >= 6
    assert counts["rejections_by_reason"].get("probe/unreadable") == 1  # the truncated file


def test_job_upload_carries_neither_the_venv_nor_outputs(cluster: LocalRayCluster, baseline: Path):
    (REPO_ROOT / "outputs").mkdir(exist_ok=True)
    listing = cluster.submit(["python", "-c", "import os, json; print(json.dumps(sorted(os.listdir('.'))))"], REPO_ROOT)
    assert listing.returncode == 0, listing.stderr[-2000:]
    line = next(text for text in listing.stdout.splitlines() if text.startswith("["))
    uploaded = set(json.loads(line))
    assert {"curation", "jobs", "shards", "pyproject.toml"} <= uploaded
    assert not uploaded & {".venv", "outputs", ".git"}


def test_killed_job_resumes_to_the_same_index(cluster: LocalRayCluster, job_input: Path, baseline: Path,
                                              tmp_path: Path):
    output = tmp_path / "corpus"
    config = job_config(job_input, output)
    started = cluster.submit(curate_entrypoint(config), REPO_ROOT, wait=False, submission_id="resume-killed")
    assert started.returncode == 0, started.stderr[-2000:]
    extracted = output / "work" / "stages" / "extract"
    deadline = time.monotonic() + 180
    while not list(extracted.rglob("*.parquet")):
        assert time.monotonic() < deadline, "the job never started extracting"
        time.sleep(0.2)
    stopped = cluster.job("stop", "resume-killed")  # waits until the job has exited
    assert stopped.returncode == 0 and "was stopped" in stopped.stdout, stopped.stdout[-2000:]
    done_before = len(list(extracted.rglob("*.parquet")))
    assert not (output / "index.parquet").exists(), "the job was stopped before it wrote the corpus"

    resumed = cluster.submit(curate_entrypoint(config), REPO_ROOT)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert done_before < read_manifest(output)["counts"]["clips"], "the kill landed mid-way"
    assert sorted_index(output).equals(sorted_index(baseline))
    assert len(list((output / "work" / "clips").rglob("*.mp4"))) == read_index(output).num_rows
    assert validate(output).ok


def test_two_node_cluster_gives_the_same_index_and_uses_both_nodes(job_input: Path, baseline: Path,
                                                                   tmp_path: Path, cluster: LocalRayCluster):
    cluster.stop()  # one cluster at a time on a 2-core machine
    output = tmp_path / "corpus"
    with LocalRayCluster(tmp_path / "ray-two", port=6382, dashboard_port=8282, head_cpus=1) as two:
        two.add_node("127.0.0.3", cpus=1)
        result = two.submit(curate_entrypoint(job_config(job_input, output)), REPO_ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert sorted_index(output).equals(sorted_index(baseline))
    workers = read_manifest(output)["workers"]
    nodes = {worker.split("/")[0] for stage in workers.values() for worker in stage}
    assert nodes == {"127.0.0.2", "127.0.0.3"}, workers
