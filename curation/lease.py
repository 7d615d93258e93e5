"""One job at a time on an output: an exclusive lease with a heartbeat, on a local disk or an object store.

Two jobs writing the same corpus would race on its partitions, its records and its manifest. So a
job takes ``work/lease.json`` at its start, naming itself (host, pid, Ray job id, start time), and
renews it every ``HEARTBEAT_S`` seconds while it runs. Another job that finds a lease renewed within
``STALE_AFTER_S`` seconds is refused with a message naming the holder. A lease whose holder died
is taken over: at once when the holder ran on this host and its process is gone, else once it has
had no heartbeat for ``STALE_AFTER_S``; to take it at once anyway, delete ``work/lease.json``.

Object stores offer no portable create-if-absent, so taking the lease is write, wait, read back:
of two jobs that write it at the same moment, the one whose write landed last keeps it, and the
other, reading back the winner's token, is refused. A job that still loses its lease later (its
heartbeat finds another token) stops before it writes anything more.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from curation.workarea import WorkArea
from storage import Location, StorageError

log = logging.getLogger(__name__)

LEASE_FILE = "lease.json"
HEARTBEAT_S = 15.0
STALE_AFTER_S = 120.0
#: Wait between writing the lease and reading it back, so that a concurrent writer's write has landed.
SETTLE_S = 1.0


class LeaseHeld(RuntimeError):
    """Another job holds the output."""


class Lease:
    """This job's hold on an output; renew it in the background with ``start``, give it back with ``release``."""

    def __init__(self, location: Location, record: dict[str, Any]) -> None:
        self.location, self.record = location, record
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name="videofactory-lease", daemon=True)

    def start(self) -> Lease:
        self._thread.start()
        return self

    def check(self) -> None:
        """Raise if another job took the lease: this job must not write any more."""
        if self.lost:
            raise LeaseHeld(self.lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=HEARTBEAT_S)
        try:
            if _read(self.location).get("token") == self.record["token"]:
                self.location.delete()
        except (StorageError, OSError, ValueError):
            log.warning("could not release the lease %s; it expires %.0f s after its last heartbeat",
                        self.location, STALE_AFTER_S)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                current = _read(self.location)
                if current.get("token") != self.record["token"]:
                    self.lost = f"another job took the lease on {self.location.parent.parent}: {_holder(current)}"
                    log.error("%s; this job stops", self.lost)
                    return
                self.record["heartbeat"] = time.time()
                self.location.write_text(json.dumps(self.record))
            except (StorageError, OSError, ValueError) as exc:  # a missed beat: the next one may work
                log.warning("lease heartbeat failed (%s); retrying in %.0f s", exc, HEARTBEAT_S)


def acquire(work: WorkArea) -> Lease:
    """Take the output's lease, or raise ``LeaseHeld`` naming the job that holds it."""
    location = work.root / LEASE_FILE
    current = _read(location)
    if current:
        age = time.time() - float(current.get("heartbeat", 0))
        if _died_here(current):
            log.warning("taking over the lease of a job that died on this host: %s", _holder(current))
        elif age < STALE_AFTER_S:
            raise LeaseHeld(
                f"{work.output} is being written by another job: {_holder(current)}, last heartbeat {age:.0f} s ago. "
                f"Wait for it to end or stop it. If it died, its lease expires {STALE_AFTER_S:.0f} s after its last "
                f"heartbeat; to break it now, delete {location}."
            )
        log.warning("taking over the lease of a job that stopped renewing it %.0f s ago: %s", age, _holder(current))
    record = {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
              "job": os.environ.get("RAY_JOB_ID") or os.environ.get("RAY_JOB_SUBMISSION_ID") or "",
              "started": time.time(), "heartbeat": time.time()}
    location.write_text(json.dumps(record))
    time.sleep(SETTLE_S)
    winner = _read(location)
    if winner.get("token") != record["token"]:
        raise LeaseHeld(f"{work.output} was taken at the same moment by another job: {_holder(winner)}")
    return Lease(location, record).start()


def _died_here(record: dict[str, Any]) -> bool:
    """Whether the holder ran on this host and its process is gone (a job that failed with the store down
    could not give its lease back; its resubmission, on the same head node, need not wait for it to expire)."""
    if record.get("host") != socket.gethostname() or not record.get("pid"):
        return False
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _read(location: Location) -> dict[str, Any]:
    try:
        return json.loads(location.read_text())
    except FileNotFoundError:
        return {}


def _holder(record: dict[str, Any]) -> str:
    job = f", Ray job {record['job']}" if record.get("job") else ""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(record.get("started", 0))))
    return f"pid {record.get('pid')} on {record.get('host')}{job}, started {started}"
