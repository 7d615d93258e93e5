"""Every port of a Ray this project starts on its own listens on loopback only.

Two real local Rays are started and every listening TCP socket of their processes is read from the
kernel (psutil): the driver's own Ray as ``videofactory curate`` starts it (``init_ray`` without
``RAY_ADDRESS``, in a child process so that it does not meet the session's Ray of this process), and
a single-node ``LocalRayCluster`` with its dashboard, while a job runs on it. Each is stopped by pid.
"""

from __future__ import annotations

import inspect
import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from jobs.local_cluster import LOOPBACK_ONLY_VAR, LocalRayCluster, _free_port
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

def listeners(pids: list[int]) -> list[list]:
    """[pid, process name, address, port] of every listening TCP socket of ``pids`` and their descendants."""
    procs = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    found = set()
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((proc.pid, proc.name(), conn.laddr.ip, conn.laddr.port))
        except psutil.NoSuchProcess:
            pass  # a worker that exited meanwhile
    return [list(row) for row in sorted(found)]


def settled(pids: list[int], quiet_s: float = 3.0, timeout_s: float = 60.0) -> list[list]:
    """``listeners(pids)`` once it has not changed for ``quiet_s`` (Ray starts agents and workers lazily)."""
    deadline, last, since = time.monotonic() + timeout_s, None, time.monotonic()
    while time.monotonic() < deadline:
        now = listeners(pids)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.5)
    return last


#: ``videofactory curate``'s start of Ray (``jobs.curate.curate``), in a child process: the loopback switch,
#: Ray and the pipeline imported, ``init_ray`` with ``RAY_ADDRESS`` (unset) and the dashboard as ``--dashboard``
#: (the variable DASHBOARD) says; one task so that workers are up; the sockets, and the dashboard's URL, as JSON.
CURATE_LIKE = "\n".join([
    "import json, os, time",
    "import psutil",
    "from jobs.local_cluster import init_ray, loopback_only_unless",
    inspect.getsource(listeners),
    inspect.getsource(settled),
    "loopback_only_unless(os.environ.get('RAY_ADDRESS'))",
    "import ray",
    "from curation.pipeline import run_curation",
    "context = init_ray(os.environ.get('RAY_ADDRESS'), dashboard=os.environ['DASHBOARD'] == '1', log_to_driver=False)",
    "ray.get([ray.remote(lambda: 0).remote() for _ in range(2)])",
    "report = {'node': ray.util.get_node_ip_address(), 'listeners': settled([os.getpid()]),",
    "          'dashboard': context.dashboard_url}",
    "print('LISTENERS ' + json.dumps(report), flush=True)",
    "ray.shutdown()",
])


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1
    return address.is_loopback


def test_is_loopback_knows_the_addresses_ray_binds():
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.0.2.2", "::ffff:192.0.2.2"]))


def assert_loopback_only(found: list) -> None:
    assert len(found) >= 4, f"too few listening sockets for a whole Ray (GCS, raylet, agents): {found}"
    exposed = [row for row in found if not is_loopback(row[2])]
    assert not exposed, f"listening beyond loopback: {exposed}"


@pytest.mark.parametrize("dashboard", [False, True], ids=["default", "with --dashboard"])
def test_the_local_ray_of_videofactory_curate_listens_on_loopback_only(tmp_path: Path, dashboard: bool):
    """Without ``--dashboard`` the local Ray serves no dashboard (Ray keeps a minimal head process without its
    modules: a few CPU seconds of start-up saved); with it, the dashboard listens on loopback like the rest."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", LOOPBACK_ONLY_VAR)}
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO_ROOT), DASHBOARD=str(int(dashboard)))
    proc = subprocess.Popen([sys.executable, "-c", CURATE_LIKE], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)  # its own session: only the Ray it started
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    report = json.loads(next(line for line in out.splitlines() if line.startswith("LISTENERS "))[len("LISTENERS "):])
    assert report["node"] == "127.0.0.1"
    assert bool(report["dashboard"]) is dashboard, report["dashboard"]
    if dashboard:
        assert report["dashboard"].startswith("127.0.0.1:")
    assert_loopback_only(report["listeners"])


def test_a_single_node_local_cluster_listens_on_loopback_only_with_a_job_running(tmp_path: Path):
    with LocalRayCluster(tmp_path / "ray", port=_free_port(), dashboard_port=_free_port(), head_cpus=1) as cluster:
        assert cluster.head_ip == "127.0.0.1"
        job = "python -c \"import ray, time; ray.init(); ray.get(ray.remote(lambda: 0).remote()); " \
              "print('job-ready', flush=True); time.sleep(300)\""
        work = tmp_path / "job"
        work.mkdir()
        started = cluster.submit(["bash", "-c", job], work, wait=False, submission_id="listen")
        assert started.returncode == 0, started.stderr[-2000:]
        deadline = time.monotonic() + 120
        while "job-ready" not in cluster.job("logs", "listen").stdout:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(1.0)
        found = settled([proc.pid for proc in cluster.processes])
        assert any(name == "gcs_server" for _, name, _, _ in found), found
        cluster.job("stop", "listen")
    assert_loopback_only(found)


def test_a_loopback_only_cluster_refuses_a_second_node_and_says_why(tmp_path: Path):
    with pytest.raises(RuntimeError, match="multi_node=True"):
        LocalRayCluster(tmp_path).add_node("127.0.0.3", cpus=1)
    with pytest.raises(ValueError, match="multi_node=True"):
        LocalRayCluster(tmp_path, head_ip="127.0.0.2")
    assert LocalRayCluster(tmp_path).env()[LOOPBACK_ONLY_VAR] == "0"
    assert LocalRayCluster(tmp_path, multi_node=True).env()[LOOPBACK_ONLY_VAR] == "1"
