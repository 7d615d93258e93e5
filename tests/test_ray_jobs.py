"""The curation job as users run it: submitted with the `ray job submit` CLI to real Ray clusters.

Each cluster here is real (``ray start`` processes on loopback addresses), started and stopped by
the test through its own pids. The input is the project's sample videos plus one bad file, so the
job exercises clips and rejections alike.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from curation.config import load_config
from jobs.local_cluster import LocalRayCluster
from shards.reader import read_index, read_manifest
from shards.validate import validate
from storage import Location
from tests import media
from tests.conftest import REPO_ROOT
from tests.layout_corpus import comparable
from tests.s3_server import FaultProxy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job_input(sample_videos: Path, tmp_path_factory) -> Path:
    """Sample videos and one truncated file, in a folder of their own."""
    folder = tmp_path_factory.mktemp("job-input")
    for video in sample_videos.iterdir():
        shutil.copy(video, folder / video.name)  # local sources are read only inside the input directory
    media.truncated(folder)
    return folder


def job_config(input_dir: Path | str, output: Path | str, folder: Path | None = None) -> Path:
    """A job YAML with absolute paths or store URIs (the job runs from its uploaded copy of the project)."""
    cfg = load_config(None, input=str(input_dir), output=str(output))
    cfg.caption.enabled = False  # no weights here; tests/test_caption.py runs the stage on a tiny model
    cfg.filter.enabled = False  # tests/test_filters.py runs the filters
    path = (folder or Path(str(output)).parent) / "job.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def curate_entrypoint(config: Path) -> list[str]:
    return ["python", "-m", "jobs.curate", "--config", str(config)]


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    """A one-node cluster: head on 127.0.0.1 with 2 CPUs, job API on 127.0.0.1:8281; it reaches the S3 server."""
    with LocalRayCluster(tmp_path_factory.mktemp("ray-one"), port=6381, dashboard_port=8281, head_cpus=2) as c:
        yield c


@pytest.fixture(scope="module")
def baseline(cluster: LocalRayCluster, job_input: Path, tmp_path_factory) -> Path:
    """A corpus made by one uninterrupted job."""
    output = tmp_path_factory.mktemp("baseline") / "corpus"
    result = cluster.submit(curate_entrypoint(job_config(job_input, output)), REPO_ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output


def sorted_index(corpus: Path | str) -> pa.Table:
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


def shard_hashes(corpus: str | Path) -> list[str]:
    return [s["sha256"] for s in read_manifest(corpus)["shards"]]


def state_objects(output: str) -> list[Location]:
    return [f for f in (Location(output) / "work" / "state").files(recursive=True) if f.name.endswith(".parquet")]


def start_until_a_source_is_done(cluster: LocalRayCluster, config: Path, submission_id: str, output: str) -> None:
    """Submit the job without waiting, and return once it has persisted the work of its first task."""
    started = cluster.submit(curate_entrypoint(config), REPO_ROOT, wait=False, submission_id=submission_id)
    assert started.returncode == 0, started.stderr[-2000:]
    deadline = time.monotonic() + 180
    while not state_objects(output):
        assert time.monotonic() < deadline, "the job never finished a source"
        time.sleep(0.2)


def test_killed_job_on_an_object_store_resumes_to_the_same_index_and_shards(
        cluster: LocalRayCluster, job_input: Path, baseline: Path, s3_bucket: str, tmp_path: Path):
    output = f"{s3_bucket}/corpus"
    config = job_config(job_input, output, tmp_path)
    start_until_a_source_is_done(cluster, config, "resume-killed", output)
    stopped = cluster.job("stop", "resume-killed")  # waits until the job has exited
    assert stopped.returncode == 0 and "was stopped" in stopped.stdout, stopped.stdout[-2000:]
    done_before = len(state_objects(output))
    assert not (Location(output) / "manifest.json").exists(), "the job was stopped before it finished"

    resumed = cluster.submit(curate_entrypoint(config), REPO_ROOT)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert done_before < read_manifest(output)["counts"]["sources"], "the kill landed mid-way"
    assert sorted_index(output).equals(sorted_index(baseline))
    assert shard_hashes(output) == shard_hashes(baseline)  # byte-identical shards
    assert not (Location(output) / "work" / "clips").files(recursive=True)
    assert validate(output).ok


def upload_inputs(job_input: Path, bucket: str) -> str:
    """The job's input videos, copied into the object store: no node reads them from a disk."""
    for video in sorted(job_input.iterdir()):
        (Location(bucket) / "in" / video.name).write_bytes(video.read_bytes())
    return f"{bucket}/in/"


def test_two_nodes_without_a_shared_directory_give_the_same_clips_and_use_both_nodes(
        job_input: Path, baseline: Path, s3_bucket: str, tmp_path: Path, cluster: LocalRayCluster):
    cluster.stop()  # one cluster at a time on a 2-core machine
    output = f"{s3_bucket}/corpus"
    config = job_config(upload_inputs(job_input, s3_bucket), output, tmp_path)
    with LocalRayCluster(tmp_path / "ray-two", port=6382, dashboard_port=8282, head_cpus=1, multi_node=True) as two:
        two.add_node("127.0.0.3", cpus=1)
        result = two.submit(curate_entrypoint(config), REPO_ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert comparable(read_index(output)) == comparable(read_index(baseline))
    assert validate(output).ok
    workers = read_manifest(output)["workers"]
    nodes = {worker.split("/")[0] for stage in workers.values() for worker in stage}
    assert nodes == {"127.0.0.2", "127.0.0.3"}, workers


def test_an_object_store_outage_fails_the_job_and_a_resubmit_loses_nothing(
        job_input: Path, baseline: Path, s3_server, s3_bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, cluster: LocalRayCluster):
    cluster.stop()
    output = f"{s3_bucket}/corpus"
    with FaultProxy(s3_server.endpoint) as proxy:
        # The cluster (and so the job) reaches the store through the proxy, with few retries so that
        # an outage fails the job in seconds; this test process still talks to the store directly.
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        monkeypatch.setenv("VIDEOFACTORY_S3_MAX_ATTEMPTS", "2")
        with LocalRayCluster(tmp_path / "ray-outage", port=6383, dashboard_port=8283, head_cpus=2) as ray_cluster:
            monkeypatch.undo()
            config = job_config(job_input, output, tmp_path)
            start_until_a_source_is_done(ray_cluster, config, "outage", output)
            proxy.down()
            failed = ray_cluster.wait_for("outage", timeout_s=300)
            assert failed == "FAILED", failed
            proxy.up()
            resumed = ray_cluster.submit(curate_entrypoint(config), REPO_ROOT)
            assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert sorted_index(output).equals(sorted_index(baseline))
    assert shard_hashes(output) == shard_hashes(baseline)
    assert validate(output).ok
