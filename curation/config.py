"""The curation job's configuration: one YAML file, every field documented, defaults a user should use.

The same config drives ``videofactory curate`` and ``python -m jobs.curate`` under ``ray job submit``.
It is also written into ``manifest.json`` of the corpus and fingerprinted, so a resumed run can tell
whether it is being asked to continue the same work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curation.filters.motion import MotionFilterConfig
from curation.filters.quality import QualityFilterConfig
from curation.filters.text import TextFilterConfig
from curation.filters.watermark import WatermarkFilterConfig

#: The stages, in the order data moves through them.
STAGES: tuple[str, ...] = ("download", "probe", "split", "extract", "filter", "caption", "write")

#: Weight dtypes a caption actor may run in; "auto" is float16 on a GPU and float32 on a CPU.
CAPTION_DTYPES: tuple[str, ...] = ("auto", "float16", "bfloat16", "float32")

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".avi", ".ts", ".mts", ".flv", ".mpg", ".mpeg", ".wmv", ".3gp",
)


@dataclass
class DownloadConfig:
    """How sources are fetched."""

    timeout_s: float = 60.0  # connect/read timeout of one HTTP attempt
    retries: int = 5  # further attempts after timeouts, connection errors, 5xx and 429
    backoff_s: float = 1.0  # first wait between attempts; doubles each time
    max_backoff_s: float = 60.0  # cap of one wait, Retry-After included
    max_bytes: int = 20 * 1024**3  # larger sources are rejected as too large
    # yt-dlp format: best mp4 of at least 720p and at most 1080p (video+audio merged when split).
    ytdlp_format: str = (
        "bv*[ext=mp4][height>=720][height<=1080]+ba[ext=m4a]/"
        "b[ext=mp4][height>=720][height<=1080]/"
        "b[height>=?720][height<=?1080]"
    )
    user_agent: str = "videofactory/0.1 (+https://github.com/videofactory)"
    deadline_s: float = 3600.0  # bound of one source's whole download, every attempt and wait included
    # Directories local paths and file:// URLs may be read from (symlinks resolved). Empty: the input
    # directory, or the manifest's own directory; anything else is rejected as outside_roots.
    local_roots: list[str] = field(default_factory=list)
    # URLs (and every redirect) to loopback, private, link-local (the cloud metadata service), shared,
    # unspecified and multicast addresses are refused unless this is true.
    allow_private_networks: bool = False

    #: Fields that name places, not results: left out of the resume fingerprint (another mount point matches).
    RESOURCE_FIELDS = ("local_roots",)


@dataclass
class ProbeConfig:
    """How sources are inspected before any decoding."""

    max_dimension: int = 8192  # a side larger than this is an absurd video and is rejected
    min_dimension: int = 16
    vfr_tolerance: float = 0.01  # relative gap between nominal and average fps that counts as VFR


@dataclass
class SplitConfig:
    """Scene detection with PySceneDetect and cutting scenes into clips."""

    detector: str = "adaptive"  # adaptive | content
    adaptive: dict[str, Any] = field(default_factory=dict)  # AdaptiveDetector keyword arguments
    content: dict[str, Any] = field(default_factory=dict)  # ContentDetector keyword arguments
    backend: str = "pyav"  # PySceneDetect video backend: pyav | opencv
    downscale: int | None = None  # frame downscale factor for detection; None = PySceneDetect's automatic
    min_duration: float = 2.0  # seconds; shorter scenes (after trimming) are rejected
    max_duration: float = 10.0  # seconds; longer scenes are cut into consecutive chunks
    trim_frames: int = 0  # frames dropped on each side of every detected cut (keeps transitions out)


@dataclass
class ExtractConfig:
    """How clips are cut out of their source with ffmpeg."""

    mode: str = "reencode"  # reencode (frame-exact) | copy (stream copy, start snaps to a keyframe)
    codec: str = "libx264"
    preset: str = "veryfast"
    crf: int = 20
    short_side: int | None = None  # scale so the short side is this many pixels (None keeps the size)
    keep_audio: bool = False
    threads: int = 1  # ffmpeg threads per clip; Ray runs one clip per declared CPU


@dataclass
class FilterConfig:
    """The filter stage: one decode per clip feeding quality, motion, text and watermark filters.

    Each filter returns scores; the stage compares them with the thresholds below and rejects a clip
    at the first filter it fails (cheap ones first: the resolution check needs no decoding, and
    text detection only runs on clips that passed everything else). ``score_only`` computes every
    score of every clip and rejects nothing, to choose thresholds from a corpus's score histograms.
    """

    enabled: bool = True  # false: no filter runs; clips pass with empty scores
    score_only: bool = False  # compute every score, reject nothing (a clip with no decodable frame still fails)
    frames: int = 8  # evenly spaced frames sampled per clip; the middle frame is added when this is even
    threads: int = 1  # decoder threads per clip; Ray runs one clip per declared CPU
    num_gpus: float | None = None  # GPUs per filter actor; None = 1 if one is left after this job's caption actors
    actors: int = 1  # filter actors when they hold GPUs (on CPUs the stage is a plain fused task)
    quality: QualityFilterConfig = field(default_factory=QualityFilterConfig)
    motion: MotionFilterConfig = field(default_factory=MotionFilterConfig)
    text: TextFilterConfig = field(default_factory=TextFilterConfig)
    watermark: WatermarkFilterConfig = field(default_factory=WatermarkFilterConfig)

    #: Fields that decide how fast filtering goes, not its results: left out of the resume fingerprint.
    RESOURCE_FIELDS = ("threads", "num_gpus", "actors")


#: Where the documented download command puts the BLIP-2 OPT-2.7B weights (relative to where the job runs).
DEFAULT_CAPTION_MODEL = "models/blip2-opt-2.7b"


@dataclass
class CaptionConfig:
    """BLIP-2 captions, as HD-VG-130M made them: one caption from each clip's middle frame.

    Captioning is on by default because a text-video corpus without text is rarely what anyone
    wants; a job whose weights are missing stops at its start with the command that fetches them.
    ``enabled: false`` builds a corpus without captions (empty ``<key>.txt``, ``caption_model``
    "none"), for users without the weights or who caption elsewhere.
    """

    enabled: bool = True
    model_path: str = DEFAULT_CAPTION_MODEL  # local directory of a BLIP-2 checkpoint (never downloaded at run time)
    dtype: str = "auto"  # auto (float16 on a GPU, float32 on CPU) | float16 | bfloat16 | float32
    frames: int = 1  # frames captioned per clip, evenly spaced; 1 = the middle frame (the main caption's frame)
    prompt: str = ""  # optional text the captions continue, e.g. "a video of"; stripped from the caption
    max_new_tokens: int = 30
    num_beams: int = 1  # 1 = greedy decoding; more = beam search
    batch_size: int = 16  # clips per model call (frames x batch_size images)
    actors: int = 1  # caption actors (model replicas) in the pool
    num_gpus: float | None = None  # GPUs per actor; None = 1 when the cluster has GPUs, else 0 (CPU actors)

    #: Fields that decide how fast captions come, not what they say: left out of the resume fingerprint.
    RESOURCE_FIELDS = ("batch_size", "actors", "num_gpus")


@dataclass
class WriteConfig:
    """WebDataset shards and the index."""

    name: str = "corpus"  # shards are shards/<name>-p00042-000000.tar, ...
    target_shard_bytes: int = 1024**3
    # Sources are hashed into partitions; a partition's shards are written as soon as all its sources are
    # done, and only partitions whose sources changed are rewritten. Fixed at a corpus's first run.
    partitions: int | None = None  # None: the power of two nearest above sources / sources_per_partition
    sources_per_partition: int = 256  # sizing of the automatic partition count
    keep_clips: bool = False  # keep work/clips/ after their shard is written and verified (they are in the shards)
    write_cpus: float = 0.25  # CPUs of a partition-writing task (tar building and uploads: mostly I/O)

    #: Fields that decide how the job runs, not what it writes: left out of the resume fingerprint.
    RESOURCE_FIELDS = ("keep_clips", "write_cpus", "sources_per_partition")


@dataclass
class ResourcesConfig:
    """What each stage declares to Ray, so the scheduler packs work onto the cluster.

    Equal values let Ray Data fuse the stages into one task per source, with no hand-over between
    workers (11% less wall time than 0.5/0.25/1/1 on the shared videos, 2 cores). Lower
    ``download_cpus`` to overlap network waits with other work when sources come over a slow network.
    """

    download_cpus: float = 1.0
    probe_cpus: float = 1.0
    split_cpus: float = 1.0
    extract_cpus: float = 1.0
    filter_cpus: float = 1.0  # CPUs of each filter task (decoding, flow, text detection on CPU)
    caption_cpus: float = 1.0  # CPUs each caption actor holds (frame decoding, and the model itself on CPU)
    sources_per_block: int = 1  # sources processed together in one Ray task


@dataclass
class CurationConfig:
    """Everything the curation job needs."""

    input: str = ""  # manifest (parquet, csv, jsonl, txt) or a directory of videos
    output: str = ""  # corpus directory; also the shared path where stages persist their results
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    url_column: str = "url"  # manifest column with the URL or path
    input_extensions: list[str] = field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    download: DownloadConfig = field(default_factory=DownloadConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    def validate(self) -> None:
        """Raise ValueError with a message that says what to fix."""
        if not self.input:
            raise ValueError("no input: set `input` in the config or pass --input (a manifest or a directory)")
        if not self.output:
            raise ValueError("no output: set `output` in the config or pass --output DIR")
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
        if self.split.detector not in ("adaptive", "content"):
            raise ValueError(f"split.detector must be 'adaptive' or 'content', not {self.split.detector!r}")
        if self.extract.mode not in ("reencode", "copy"):
            raise ValueError(f"extract.mode must be 'reencode' or 'copy', not {self.extract.mode!r}")
        if not 0 < self.split.min_duration <= self.split.max_duration:
            raise ValueError("need 0 < split.min_duration <= split.max_duration")
        self._validate_caption()
        self._validate_filter()

    def _validate_filter(self) -> None:
        cfg = self.filter
        if int(cfg.frames) < 2:
            raise ValueError(f"filter.frames must be at least 2 (motion needs several moments), not {cfg.frames!r}")
        if cfg.num_gpus is not None and cfg.num_gpus < 0:
            raise ValueError(f"filter.num_gpus must be null (automatic) or >= 0, not {cfg.num_gpus!r}")
        if cfg.motion.gap_s <= 0 or cfg.motion.width < 16:
            raise ValueError("filter.motion.gap_s must be > 0 and filter.motion.width at least 16")
        if not 0 < cfg.quality.aspect or cfg.quality.aspect_tolerance < 0:
            raise ValueError("filter.quality.aspect must be > 0 and filter.quality.aspect_tolerance >= 0")

    def _validate_caption(self) -> None:
        caption = self.caption
        if caption.dtype not in CAPTION_DTYPES:
            raise ValueError(f"caption.dtype must be one of {', '.join(CAPTION_DTYPES)}, not {caption.dtype!r}")
        for name in ("frames", "max_new_tokens", "num_beams", "batch_size", "actors"):
            if int(getattr(caption, name)) < 1:
                raise ValueError(f"caption.{name} must be at least 1, not {getattr(caption, name)!r}")
        if caption.num_gpus is not None and caption.num_gpus < 0:
            raise ValueError(f"caption.num_gpus must be null (automatic) or >= 0, not {caption.num_gpus!r}")

    def ordered_stages(self) -> list[str]:
        """The selected stages in pipeline order."""
        return [s for s in STAGES if s in self.stages]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, stage: str) -> str:
        """Hash of everything that decides a stage's output (and of the stages before it).

        Paths and resources do not change results, so they are left out: the same work resumed with
        more CPUs or from another mount point still matches.
        """
        parts: dict[str, Any] = {"url_column": self.url_column, "input_extensions": self.input_extensions}
        for name in STAGES[: STAGES.index(stage) + 1]:
            section = getattr(self, name, None)
            if section is not None:
                skipped = getattr(section, "RESOURCE_FIELDS", ())
                parts[name] = {k: v for k, v in dataclasses.asdict(section).items() if k not in skipped}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys with the list of known ones."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} in {where or 'top level'}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = getattr(cls(), name) if name in known else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            kwargs[name] = _build(type(default), value, f"{where}.{name}".strip("."))
        else:
            kwargs[name] = value
    return cls(**kwargs)


def load_config(path: str | Path | None = None, **overrides: Any) -> CurationConfig:
    """Read a YAML config (or start from defaults) and apply non-None ``overrides`` of top-level keys."""
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config must be a YAML mapping")
        data = loaded or {}
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> CurationConfig:
    """Build a config from plain data (a parsed YAML file, or ``to_dict()`` shipped to a Ray worker)."""
    config = _build(CurationConfig, data, "")
    if isinstance(config.stages, str):
        config.stages = [s.strip() for s in config.stages.split(",") if s.strip()]
    return config
