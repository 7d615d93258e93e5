"""The local Ray cluster listens on loopback only: every port of every process of every node.

A head and a worker node are started, a driver runs a task on each node (so core workers, with
their own gRPC servers, are up too), and the listening sockets of every process the cluster's
``ray start`` processes started are listed.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from jobs.local_cluster import LocalRayCluster, _free_port

DRIVER = textwrap.dedent("""
    import sys, time, ray
    ray.init(address=sys.argv[1], log_to_driver=False)
    @ray.remote(num_cpus=1)
    class Hold:
        def node(self):
            return ray.get_runtime_context().get_node_id()
    holders = [Hold.remote() for _ in range(2)]  # 1 CPU per node: one on each
    print(len(set(ray.get([h.node.remote() for h in holders]))), flush=True)
    time.sleep(600)
""")


def loopback(address: str) -> bool:
    """127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address (how gRPC lists a socket bound to 127.0.0.1)."""
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def listening(pids: list[int]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening inet socket of ``pids`` and all their descendants."""
    found = []
    for pid in pids:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                name = proc.name()
                conns = proc.net_connections(kind="inet")
            except psutil.NoSuchProcess:
                continue
            found += [(name, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


@pytest.fixture
def cluster(tmp_path: Path):
    with LocalRayCluster(tmp_path / "ray", port=_free_port(), dashboard_port=_free_port(), head_cpus=1) as c:
        c.add_node(cpus=1)
        yield c


def test_every_port_of_a_local_cluster_listens_on_loopback_only(cluster: LocalRayCluster) -> None:
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, f"{cluster.head_ip}:{cluster.port}"], env=cluster.env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline().strip() == "2"  # one actor on each node: both nodes run workers
        sockets = listening([p.pid for p in cluster.processes])
    finally:
        driver.kill()
        driver.wait()
    exposed = [s for s in sockets if not loopback(s[1])]
    assert not exposed, f"listening beyond loopback: {exposed}"
    ports = {port for _, _, port in sockets}
    names = {name for name, _, _ in sockets}
    assert {cluster.port, cluster.dashboard_port} <= ports  # GCS and the job API were among those listed
    assert {"gcs_server", "raylet"} <= names and len(sockets) > 10, sockets
    assert sum(name == "raylet" for name, _, _ in sockets) >= 4  # node and object managers of both nodes
