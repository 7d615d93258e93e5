"""Local Ray on this machine: the driver's own local Ray (``init_ray``) and a real ``ray start`` cluster.

``init_ray`` is how ``videofactory curate`` and ``videofactory train --ray`` reach Ray: they join
``RAY_ADDRESS`` when it is set (always so inside ``ray job submit``), and otherwise start a private
local Ray whose every port (GCS, raylet, workers, agents, dashboard) listens on 127.0.0.1 only.

``LocalRayCluster`` is a real cluster for the demo and the tests. The head and any extra nodes are
started with the real ``ray start --block`` CLI as child processes and stopped through their own pids
(SIGTERM makes ``ray start --block`` shut its node down cleanly), never by a process-name pattern that
could hit someone else's Ray. Jobs go through the real ``ray job submit`` CLI. The cluster uses token
authentication with a token of its own, kept in its work directory, so nothing on the machine can
submit to it uninvited.

Loopback only, and why only a single node can be: Ray's gRPC servers bind 127.0.0.1 when their node's
address is exactly 127.0.0.1 and all interfaces otherwise, and Ray swaps a node address of 127.0.0.1
for the machine's network address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (``LOOPBACK_ONLY_ENV``),
which also makes ``ray start`` refuse to join any further node. So a single-node cluster (the
default) runs its head on 127.0.0.1 with that variable: GCS, raylet, agents and dashboard all listen
on loopback. A ``multi_node=True`` cluster puts its nodes on 127.0.0.2, 127.0.0.3, ... (the dashboard,
and so the job API, stays on 127.0.0.1): their gRPC ports then listen on all interfaces, a limitation
of Ray, and only the cluster's token keeps strangers out.
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
from typing import Any

import requests

log = logging.getLogger(__name__)

#: What a job's upload of the working directory must never carry (Ray also honours .gitignore).
UPLOAD_EXCLUDES = [".venv", "outputs", ".git", "test-artifacts", "**/__pycache__"]


#: What the job API answers while a fresh node's job agent is still starting, and how long to wait it out.
NO_AGENT_YET = "No available agent to submit job"
AGENT_WAIT_S = 60.0

#: Ray's switch for clusters of several nodes (``ray._private.ray_constants.ENABLE_RAY_CLUSTER``), read once when
#: ``ray`` is first imported. At "0" Ray keeps a node address of 127.0.0.1 as it is instead of swapping in the
#: machine's network address, and Ray's gRPC servers bind loopback only for a node on exactly 127.0.0.1; the
#: price is that ``ray start --address`` refuses to join another node, so only a single-node Ray can have it.
LOOPBACK_ONLY_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK_ONLY_ENV = {LOOPBACK_ONLY_VAR: "0"}


def loopback_only_unless(address: str | None) -> None:
    """Set ``LOOPBACK_ONLY_ENV`` when no cluster ``address`` is given, i.e. when a local Ray will be started.

    Call it before anything imports ``ray``, and import the job's modules before ``init_ray``: under ``ray job
    submit`` on two nodes of one machine, a module imported only after connecting was once found missing from
    the job's working directory while a node unpacked it again.
    """
    if not address:
        os.environ.update(LOOPBACK_ONLY_ENV)


def start_local_ray(**kwargs: Any) -> Any:
    """``ray.init(address="local", **kwargs)``: a private local Ray with every port on 127.0.0.1.

    Sets ``LOOPBACK_ONLY_ENV`` in this process, so that Ray and the processes it starts read it. Ray
    reads the variable once, when it is first imported: call this before anything imports ``ray``.
    Raises rather than leave a Ray running whose node is not 127.0.0.1, i.e. one listening on all
    interfaces.
    """
    os.environ.update(LOOPBACK_ONLY_ENV)
    import ray

    context = ray.init(address="local", **kwargs)
    node = ray.util.get_node_ip_address()
    if node != "127.0.0.1":
        ray.shutdown()
        raise RuntimeError(f"the local Ray came up on {node}, not 127.0.0.1, so it would listen on all interfaces: "
                           f"`ray` was imported before start_local_ray set {LOOPBACK_ONLY_VAR}=0; call it first")
    return context


def init_ray(address: str | None, dashboard: bool = True, **kwargs: Any) -> Any:
    """Join the cluster at ``address`` (``ray.init``'s) or, when it is empty, start a loopback-only local Ray;
    nothing when this process is already connected to a Ray.

    The drivers pass ``RAY_ADDRESS``, which Ray sets inside ``ray job submit``; without it they start a
    private Ray (``start_local_ray``) rather than join whatever cluster a stale address file here names.
    ``dashboard``: whether that local Ray serves its dashboard (its modules' processes cost a few CPU seconds
    to start, ``benchmarks/bench_startup.py``; without it Ray keeps a minimal head process with no web
    frontend); a cluster joined keeps whatever it has.
    """
    running = sys.modules.get("ray")
    if running is not None and running.is_initialized():
        return None  # this process already has its Ray (a test's, or the caller's)
    if not address:
        return start_local_ray(include_dashboard=dashboard, **kwargs)
    import ray

    return ray.init(address=address, **kwargs)


class LocalRayCluster:
    """A head node plus, with ``multi_node``, worker nodes; each a ``ray start --block`` child process.

    By default a single node on 127.0.0.1, every port on loopback. ``multi_node=True`` lets ``add_node``
    join nodes, at the cost of the nodes' gRPC ports listening on all interfaces (see the module's doc);
    its head is on ``head_ip`` (default 127.0.0.2), the other nodes on addresses given to ``add_node``.
    """

    def __init__(self, workdir: Path, head_ip: str | None = None, port: int = 6379, dashboard_port: int = 8265,
                 head_cpus: int | None = None, multi_node: bool = False) -> None:
        if not multi_node and head_ip not in (None, "127.0.0.1"):
            raise ValueError(f"a single-node LocalRayCluster runs on 127.0.0.1 (loopback only), not {head_ip}; "
                             "pass multi_node=True for a head on another address")
        self.workdir = Path(workdir)
        self.multi_node = multi_node
        self.head_ip = head_ip or ("127.0.0.2" if multi_node else "127.0.0.1")
        self.port, self.dashboard_port, self.head_cpus = port, dashboard_port, head_cpus
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
        # Loopback only for a single node; a multi-node cluster needs Ray's default (on Linux "1") to join nodes.
        env[LOOPBACK_ONLY_VAR] = "1" if self.multi_node else LOOPBACK_ONLY_ENV[LOOPBACK_ONLY_VAR]
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
        """Join a worker node on loopback address ``ip`` with ``cpus`` CPUs (a ``multi_node`` cluster only)."""
        if not self.multi_node:
            raise RuntimeError("this LocalRayCluster is single-node so that every port listens on loopback only; "
                               "Ray cannot join another node to such a head: create it with multi_node=True "
                               "(whose gRPC ports listen on all interfaces, guarded by the cluster's token)")
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
