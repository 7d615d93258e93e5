"""A real Ray cluster on this machine, on loopback only, for the demo and the tests.

The head and any extra nodes are started with the real ``ray start --block`` CLI as child
processes and stopped through their own pids (SIGTERM makes ``ray start --block`` shut its node
down cleanly), never by a process-name pattern that could hit someone else's Ray. Jobs go through
the real ``ray job submit`` CLI. The cluster uses token authentication with a token of its own,
kept in its work directory, so nothing on the machine can submit to it uninvited.

Ray replaces 127.0.0.1 with the machine's network address, so nodes bind other loopback addresses
(127.0.0.2, 127.0.0.3, ...) while the dashboard, and so the job API, listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import requests

log = logging.getLogger(__name__)

#: What a job's upload of the working directory must never carry (Ray also honours .gitignore).
UPLOAD_EXCLUDES = [".venv", "outputs", ".git", "test-artifacts", "**/__pycache__"]


#: What the job API answers while a fresh node's job agent is still starting, and how long to wait it out.
NO_AGENT_YET = "No available agent to submit job"
AGENT_WAIT_S = 60.0


class LocalRayCluster:
    """A head node plus optional worker nodes, each a ``ray start --block`` child process."""

    def __init__(self, workdir: Path, head_ip: str = "127.0.0.2", port: int = 6379, dashboard_port: int = 8265,
                 head_cpus: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.head_ip, self.port, self.dashboard_port, self.head_cpus = head_ip, port, dashboard_port, head_cpus
        self.processes: list[subprocess.Popen[bytes]] = []
        self.token_path = self.workdir / "auth_token"
        self.ray = str(Path(sys.executable).parent / "ray")

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def env(self) -> dict[str, str]:
        """Environment for the cluster and its clients: our token, and this venv's python first on PATH."""
        env = dict(os.environ)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path), RAY_USAGE_STATS_ENABLED="0")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.pop("RAY_ADDRESS", None)
        return env

    def start(self, timeout_s: float = 90.0) -> LocalRayCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.token_path.exists():
            self.token_path.write_text(secrets.token_hex(32))
            self.token_path.chmod(0o600)
        args = ["--head", f"--node-ip-address={self.head_ip}", f"--port={self.port}",
                "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
        if self.head_cpus is not None:
            args.append(f"--num-cpus={self.head_cpus}")
        self._spawn("head", args)
        self._wait(lambda: self._nodes() >= 1, timeout_s, "the Ray head to answer")
        log.info("Ray head up on %s:%d, jobs at %s", self.head_ip, self.port, self.dashboard_url)
        return self

    def add_node(self, ip: str, cpus: int, timeout_s: float = 90.0) -> None:
        """Join a worker node on loopback address ``ip`` with ``cpus`` CPUs."""
        expected = self._nodes() + 1
        self._spawn(f"node-{ip}", [f"--address={self.head_ip}:{self.port}", f"--node-ip-address={ip}",
                                   f"--num-cpus={cpus}"])
        self._wait(lambda: self._nodes() >= expected, timeout_s, f"node {ip} to join")

    def submit(self, entrypoint: Sequence[str], working_dir: Path, wait: bool = True,
               submission_id: str | None = None, timeout_s: float = 600.0,
               stream: bool = False) -> subprocess.CompletedProcess[str]:
        """``ray job submit`` of ``entrypoint`` with ``working_dir`` uploaded (venv and outputs excluded).

        With ``stream`` the job's logs are also printed to this process's console.
        """
        args = [self.ray, "job", "submit", "--address", self.dashboard_url, "--working-dir", str(working_dir),
                "--runtime-env-json", json.dumps({"excludes": UPLOAD_EXCLUDES})]
        if submission_id:
            args += ["--submission-id", submission_id]
        if not wait:
            args.append("--no-wait")
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            result = subprocess.run([*args, "--", *entrypoint], env=self.env(), capture_output=True, text=True,
                                    timeout=timeout_s, check=False)
            if NO_AGENT_YET not in (result.stderr or "") or time.monotonic() > deadline:
                break
            time.sleep(2.0)  # the head answers before its job agent is up; Ray says to try again
        if stream:
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
        return result

    def job(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Another ``ray job`` subcommand (``status``, ``stop``, ``logs``) against this cluster."""
        return subprocess.run([self.ray, "job", *args, "--address", self.dashboard_url], env=self.env(),
                              capture_output=True, text=True, timeout=120, check=False)

    def wait_for(self, submission_id: str, timeout_s: float = 600.0) -> str:
        """Wait until the job ends; its final status (SUCCEEDED, FAILED or STOPPED)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.job("status", submission_id)  # `ray job status` words a final state as a sentence
            final = re.search(rf"Job '{re.escape(submission_id)}' (succeeded|failed|was stopped)",
                              status.stdout + status.stderr)
            if final:
                return {"succeeded": "SUCCEEDED", "failed": "FAILED", "was stopped": "STOPPED"}[final.group(1)]
            time.sleep(1.0)
        raise TimeoutError(f"job {submission_id} still running after {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop every node this object started, workers first, by pid."""
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: only its own processes
                proc.wait()
        self.processes.clear()
        self._forget_address()

    def _forget_address(self) -> None:
        """Remove Ray's record of this cluster as the machine's current one (``ray stop`` would)."""
        record = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if record.exists() and record.read_text().strip() == f"{self.head_ip}:{self.port}":
            record.unlink()

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, args: list[str]) -> None:
        log_file = open(self.workdir / f"{name}.log", "ab")
        args = [*args, *_private_ports()]
        proc = subprocess.Popen([self.ray, "start", "--block", "--disable-usage-stats", *args], env=self.env(),
                                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.processes.append(proc)

    def _nodes(self) -> int:
        """Alive nodes according to the dashboard (0 while it is not up yet)."""
        try:
            reply = requests.get(f"{self.dashboard_url}/nodes?view=summary", timeout=5,
                                 headers={"Authorization": f"Bearer {self.token_path.read_text().strip()}"})
            summary = reply.json()["data"]["summary"]
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return 0
        return sum(1 for node in summary if node.get("raylet", {}).get("state") == "ALIVE")

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            dead = [p for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"timed out waiting for {what}; see the logs in {self.workdir}"
                                   if not dead else f"`ray start` exited while waiting for {what}; see {self.workdir}")
            time.sleep(1.0)


def _free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _private_ports() -> list[str]:
    """Fresh ports for a node's agents and managers.

    Ray's defaults for these are fixed numbers, so a second Ray on the machine (a local
    ``ray.init``, another cluster) would leave the new node's job agent unable to bind and every job
    submission failing with "No available agent".
    """
    flags = ("--node-manager-port", "--object-manager-port", "--metrics-export-port", "--runtime-env-agent-port",
             "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port", "--ray-client-server-port")
    return [f"{flag}={_free_port()}" for flag in flags]
