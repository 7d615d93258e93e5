"""How soon a huge manifest starts working, and what it costs the driver: time to the first request, peak RSS.

A manifest of N URLs (CSV, one column) pointing at a loopback HTTP server that answers every request
with 404 is given to the real ``videofactory curate`` command (a fresh process that starts its own
local Ray, as a user would run it). The server notes when the first request arrives; the job is
stopped (SIGINT, then SIGKILL of its process group) once ``--requests`` requests have been answered,
or at ``--limit-s``. The driver's RSS is sampled from ``/proc`` every 0.1 s.

The baseline, measured the same way in the same run, is a one-row manifest: what any job pays
before its first request (Python imports, Ray's start, the job's set-up). The table gives each size's
time to first request as a ratio of that baseline, and the extra seconds and driver RSS the manifest's
size adds. The issue's aim: 100,000 rows reach the first request within 30 s and the driver stays
under 1.5 GB.

Run from the repository root: ``.venv/bin/python benchmarks/bench_manifest.py`` (about 3 minutes on 2
cores at the default sizes). Markdown goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

VIDEOFACTORY = str(Path(sys.executable).parent / "videofactory")


class NotFoundServer:
    """Answers every GET with 404 and notes when the first one came and how many came."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.count = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with outer.lock:
                    outer.count += 1
                    if outer.first is None:
                        outer.first = time.monotonic()
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> NotFoundServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(rows: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Run the CLI on a manifest of ``rows`` 404 URLs; seconds to the first request and the driver's peak RSS."""
    folder = tmp / f"rows-{rows}"
    folder.mkdir()
    with NotFoundServer() as server:
        manifest = folder / "manifest.csv"
        with manifest.open("w") as out:
            out.write("url\n")
            for i in range(rows):
                out.write(f"{server.url}/missing/{i:08d}.mp4\n")
        config = folder / "job.yaml"
        config.write_text(yaml.safe_dump({
            "download": {"allow_private_networks": True, "retries": 0},
            "caption": {"enabled": False}, "filter": {"enabled": False},
        }))
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        started = time.monotonic()
        proc = subprocess.Popen([VIDEOFACTORY, "curate", "--config", str(config), "--input", str(manifest),
                                 "--output", str(folder / "corpus")], env=env, stdout=subprocess.DEVNULL,
                                stderr=open(folder / "job.log", "wb"), start_new_session=True)
        peak = 0
        deadline = started + args.limit_s
        while proc.poll() is None and time.monotonic() < deadline and server.count < args.requests:
            peak = max(peak, _rss_bytes(proc.pid))
            time.sleep(0.1)
        ended = proc.poll()
        _stop(proc)
        first = None if server.first is None else server.first - started
    if ended not in (None, 0) and first is None:
        tail = (folder / "job.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the job for {rows} rows failed before any request (exit {ended}):\n{tail}")
    return {"rows": rows, "first_request_s": first, "requests": server.count, "peak_rss": peak}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (Ray shuts its local instance down), then SIGKILL of the job's own process group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def report(results: list[dict[str, Any]], args: argparse.Namespace, started: datetime) -> str:
    base = results[0]
    lines = [
        f"## Manifest size: time to the first request ({started:%Y-%m-%d}, {platform.node()}, "
        f"{os.cpu_count()} CPUs)",
        "",
        f"`benchmarks/bench_manifest.py --rows {args.rows}`; baseline: a {base['rows']}-row manifest in the same run.",
        "",
        "| manifest rows | first request (s) | ratio to baseline | added (s) | driver peak RSS (MB) | requests seen |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        first = r["first_request_s"]
        ratio = first / base["first_request_s"] if first and base["first_request_s"] else float("nan")
        lines.append(f"| {r['rows']:,} | {first:.1f} | {ratio:.2f} | {first - base['first_request_s']:+.1f} | "
                     f"{r['peak_rss'] / 2**20:.0f} | {r['requests']} |")
    top = results[-1]
    lines += ["", f"Aim for {top['rows']:,} rows: first request within 30 s "
              f"({'met' if top['first_request_s'] < 30 else 'missed'}: {top['first_request_s']:.1f} s), driver under "
              f"1.5 GB ({'met' if top['peak_rss'] < 1.5 * 2**30 else 'missed'}: {top['peak_rss'] / 2**30:.2f} GB)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/bench_manifest.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,10000,100000", help="manifest sizes; the first is the baseline")
    parser.add_argument("--requests", type=int, default=200, help="stop a job once this many requests came in")
    parser.add_argument("--limit-s", type=float, default=300, help="stop a job after this long in any case")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-manifest-") as tmp:
        for rows in [int(r) for r in args.rows.split(",")]:
            print(f"[bench_manifest] {rows} rows ...", file=sys.stderr, flush=True)
            results.append(measure(rows, args, Path(tmp)))
            print(f"[bench_manifest] {results[-1]}", file=sys.stderr, flush=True)
    print(report(results, args, started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
