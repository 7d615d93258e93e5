"""How fast one loader worker turns shards into training clips, against plain decoding and the trainer's appetite.

Every clip the loader yields has to be decoded, so PyAV decoding every frame of the same clips (no
resize, nothing kept) is the baseline. This script times, in one process and on the same shards:

* the baseline: decode all frames of each clip;
* the loader (``training.data.ResumableLoader``, in-process, so exactly one worker): tar reading,
  shuffling, decoding up to the last frame needed, resize + centre crop of T frames;
* the consumer: training steps of the tiny U-Net (with the UNTRAINED tiny encoders) at the same
  frame count and size on this CPU, in samples/s: the rate one worker must feed.

A second table times whole training steps (one DataLoader worker, as a run has) for three data sources,
each against the first: clips decoded and encoded by the frozen VAE and text encoder on the fly;
sidecars (``videofactory encode``'s precomputed posteriors and caption embeddings); sidecars plus
buckets (``data.buckets``: landscape, portrait, and a shorter landscape bucket). For each: seconds per
step, the share of step time spent waiting for data, and the one-off encode time of the sidecars.

Each is given as clips (samples) per wall second and per CPU second of this process (all its
threads), and as a ratio to the baseline; the last line is how many workers one trainer needs.
A GPU trainer consumes far faster than this CPU one: divide its samples/s by the loader's clips/s
per worker for the workers it needs.

Run from the repository root: ``.venv/bin/python benchmarks/bench_loader.py`` (about a minute on
2 cores); ``--corpus DIR`` benchmarks a real corpus instead of the clips it renders.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import av
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # demo/ is not installed

from demo.sample_videos import run_ffmpeg
from demo.tiny_training import make_tiny_pretrained
from shards.hashing import file_sha256
from shards.layout import MANIFEST_FILE, SHARDS_DIR, shard_name
from shards.reader import iter_samples
from shards.writer import Sample, write_shard
from training.config import CorpusConfig, DataConfig, config_from_dict, load_config
from training.data import ResumableLoader
from training.distributed import DistEnv
from training.encode import encode_corpus
from training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


def render_corpus(root: Path, clips: int, seconds: float, portrait: int = 0) -> Path:
    """``clips`` 25 fps clips encoded as extraction does (libx264 veryfast crf 20), in one shard, with the index
    metadata extraction records: 1280x720, the last ``portrait`` of them 720x1280."""
    samples, entries = [], []
    for n in range(clips):
        path = root / f"clip{n}.mp4"
        width, height = (720, 1280) if n >= clips - portrait else (1280, 720)
        run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=s={width}x{height}:r=25:d={seconds}", "-vf", f"hue=h={n * 40}",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", str(path)])
        meta = {"clip_width": width, "clip_height": height, "clip_fps": 25.0, "clip_frames": round(seconds * 25)}
        samples.append((Sample(f"bench_{n:04d}", f"test card {n}", meta), path.read_bytes()))
    shard = root / "corpus" / SHARDS_DIR / shard_name("corpus", 0, 0)
    write_shard(shard, samples)
    entries.append({"name": shard.name, "sha256": file_sha256(shard)})
    (root / "corpus" / MANIFEST_FILE).write_text(json.dumps({"shards": entries}))  # what the encode job reads
    return root / "corpus"


def timed(work: Callable[[], int]) -> tuple[int, float, float]:
    """(items, wall seconds, CPU seconds of this process) of ``work()``, which returns its item count."""
    wall, cpu = time.perf_counter(), time.process_time()
    items = work()
    return items, time.perf_counter() - wall, time.process_time() - cpu


def decode_all(corpus: Path) -> int:
    clips = 0
    for sample in iter_samples(corpus):
        with av.open(io.BytesIO(sample["mp4"])) as container:
            for _ in container.decode(video=0):
                pass
        clips += 1
    return clips


def data_sources(tiny: dict, steps: int, tmp: Path) -> list[tuple[str, float, float, float]]:
    """(case, seconds per step, share of step time waiting for data, seconds to encode the sidecars) of training
    steps with one DataLoader worker, for each data source."""
    data = tiny["data"]
    buckets = [{"width": data["width"], "height": data["height"], "frames": data["frames"]},
               {"width": data["height"], "height": data["width"], "frames": data["frames"]}]
    cases = [("on the fly: decode + VAE/text encode per step", {"sidecars": "off"}),
             ("sidecars", {"sidecars": "require"}),
             ("sidecars + buckets (landscape, portrait)", {"sidecars": "require", "buckets": buckets})]
    rows = []
    for name, fields in cases:
        cfg = config_from_dict({**tiny, "data": {**data, **fields, "workers": 1}, "output": str(tmp / name[:8])})
        encode_seconds = float("nan")
        if fields["sidecars"] == "require":
            encode_seconds = timed(lambda c=cfg: len(encode_corpus(c, c.data.corpora[0])["shards"]))[1]
        trainer = Trainer(cfg, DistEnv(0, 1, 0, torch.device("cpu")))
        trainer.train_step()  # warm-up: starts the worker
        results = [trainer.train_step() for _ in range(steps)]
        seconds = sum(r["seconds"] for r in results)
        rows.append((name, seconds / steps, sum(r["wait"] for r in results) / seconds, encode_seconds))
        del trainer  # and its DataLoader worker, before the next case starts one
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", help="a corpus directory (default: render 6 clips of 8 s at 720p)")
    parser.add_argument("--clips", type=int, default=24, help="clips the loader and the trainer take (default 24)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per data source (default 12)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    corpus = Path(args.corpus) if args.corpus else render_corpus(tmp, clips=6, seconds=8.0, portrait=2)
    data = DataConfig(corpora=[CorpusConfig(path=str(corpus))], frames=args.frames, stride=args.stride,
                      width=args.width, height=args.height, batch_size=1, workers=0, shuffle_buffer=8)
    loader = ResumableLoader(data, seed=0)
    load_avg = os.getloadavg()
    rows = [("baseline: decode every frame", *timed(lambda: decode_all(corpus)))]
    rows.append(("loader, one worker", *timed(lambda: sum(len(next(loader)["key"]) for _ in range(args.clips)))))
    tiny = load_config(ROOT / "configs" / "train_tiny.yaml").to_dict()
    tiny["data"] = {**tiny["data"], **{k: getattr(data, k) for k in ("frames", "stride", "width", "height")},
                    "corpora": [{"path": str(corpus), "weight": 1.0}], "workers": 0, "batch_size": 1}
    tiny["model"].update(make_tiny_pretrained(tmp / "tiny"))
    tiny.update(output=str(tmp / "train"), steps=10**9, checkpoint_every=10**9, log_every=10**9)
    trainer = Trainer(config_from_dict(tiny), DistEnv(0, 1, 0, torch.device("cpu")))
    trainer.train_step()  # warm-up
    steps = [trainer.train_step() for _ in range(max(1, args.clips // 4))]
    consumer = (sum(s["samples"] for s in steps), sum(s["seconds"] - s["wait"] for s in steps), float("nan"))
    rows.append(("tiny U-Net train steps (compute only)", *consumer))

    base = rows[0][1] / rows[0][2]
    print(f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}\n- machine: {platform.machine()}, "
          f"{os.cpu_count()} cores, {platform.platform()}; torch threads 1, PyAV {av.__version__}\n"
          f"- corpus: {corpus}; clips: {args.frames} frames at stride {args.stride}, {args.width}x{args.height}\n"
          f"- load average before: {' '.join(f'{x:.2f}' for x in load_avg)}\n")
    print("| what | clips | wall s | clips/s | × baseline | CPU s | clips/CPU s |\n|---|---:|---:|---:|---:|---:|---:|")
    for name, items, wall, cpu in rows:
        per_cpu = f"{items / cpu:.2f}" if cpu == cpu else "-"
        print(f"| {name} | {items} | {wall:.2f} | {items / wall:.2f} | {items / wall / base:.2f} | "
              f"{cpu:.2f} | {per_cpu} |")
    need = (rows[2][1] / rows[2][2]) / (rows[1][1] / rows[1][2])
    print(f"\nworkers one tiny CPU trainer needs: {need:.2f}\n")
    sources = data_sources(tiny, args.steps, tmp)
    print("| data source (one worker) | s/step | × on the fly | data wait share | encode once (s) |\n"
          "|---|---:|---:|---:|---:|")
    for name, step, wait, encode in sources:
        print(f"| {name} | {step:.3f} | {step / sources[0][1]:.2f} | {wait:.1%} | "
              f"{'-' if encode != encode else f'{encode:.1f}'} |")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
