"""One job per output: a second job is refused while the first holds the lease, on a disk and on S3."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from curation import lease as lease_module
from curation.config import load_config
from curation.lease import LeaseHeld, acquire
from curation.pipeline import run_curation
from curation.workarea import WorkArea


@pytest.fixture(params=["local", "s3"])
def output(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(lease_module, "SETTLE_S", 0.05)
    if request.param == "local":
        return str(tmp_path / "corpus")
    return f"{request.getfixturevalue('s3_bucket')}/corpus"


def test_a_second_job_is_refused_and_told_who_holds_the_output(output: str):
    work = WorkArea.of(output)
    first = acquire(work)
    try:
        with pytest.raises(LeaseHeld) as refused:
            acquire(work)
        message = str(refused.value)
        assert f"pid {first.record['pid']}" in message and first.record["host"] in message
        assert "lease.json" in message and "delete" in message
    finally:
        first.release()
    acquire(work).release()  # released: the next job gets it
    assert not (work.root / "lease.json").exists()


def test_a_lease_without_heartbeat_is_taken_over(output: str):
    work = WorkArea.of(output)
    stale = {"token": "dead", "host": "gone", "pid": 1, "job": "", "started": 0,
             "heartbeat": time.time() - lease_module.STALE_AFTER_S - 1}
    (work.root / "lease.json").write_text(json.dumps(stale))
    taken = acquire(work)
    assert json.loads((work.root / "lease.json").read_text())["token"] == taken.record["token"]
    taken.release()


def test_the_lease_of_a_job_that_died_on_this_host_is_taken_at_once(output: str):
    work = WorkArea.of(output)
    held = {"token": "dead", "host": socket.gethostname(), "pid": _finished_pid(), "job": "", "started": 0,
            "heartbeat": time.time()}
    (work.root / "lease.json").write_text(json.dumps(held))
    taken = acquire(work)
    assert json.loads((work.root / "lease.json").read_text())["token"] == taken.record["token"]
    taken.release()


def _finished_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_job_whose_lease_was_taken_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(lease_module, "SETTLE_S", 0.05)
    monkeypatch.setattr(lease_module, "HEARTBEAT_S", 0.1)
    work = WorkArea.of(tmp_path / "corpus")
    held = acquire(work)
    intruder = {**held.record, "token": "other", "pid": 4242, "host": "elsewhere"}
    (work.root / "lease.json").write_text(json.dumps(intruder))
    deadline = time.monotonic() + 5
    while held.lost is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(LeaseHeld, match="pid 4242 on elsewhere"):
        held.check()
    held.release()
    assert json.loads((work.root / "lease.json").read_text())["token"] == "other"  # not ours to delete


def test_curation_refuses_an_output_another_job_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(lease_module, "SETTLE_S", 0.05)
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"never read")
    cfg = load_config(None, input=str(videos), output=str(tmp_path / "corpus"))
    held = acquire(WorkArea.of(cfg.output))
    try:
        with pytest.raises(LeaseHeld, match="being written by another job"):
            run_curation(cfg)
    finally:
        held.release()
    assert not (tmp_path / "corpus" / "work" / "sources").exists(), "the refused job did nothing"
