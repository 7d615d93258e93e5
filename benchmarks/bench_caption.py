"""Captioning throughput: frames captioned per second by batch size, against one image at a time.

1. Model throughput. The stage's own ``Captioner`` captions the same real video frames (from the
   project's sample videos) in batches of 1, 2, 4, ... 64 images per ``generate`` call; the
   baseline, in the same process, captions them in a plain loop of one image per call. Every
   caption is exactly ``--tokens`` tokens long (``min_new_tokens = max_new_tokens``), so random
   weights cost what trained ones do.
   - ``--model tiny`` (the default without a GPU): the tiny untrained BLIP-2, loaded from disk by
     ``Captioner.load``, float32 on the CPU.
   - ``--model opt-2.7b`` (the default with a GPU): BLIP-2 OPT-2.7B's full architecture (ViT-g,
     Q-Former, OPT-2.7B) built from its configuration with random weights, in float16 and bfloat16,
     its Q-Former kept in float32 as ``from_pretrained`` keeps it.
   - ``--model tiny-vlm``: ``caption.model: vlm`` on the tiny untrained Qwen2.5-VL, loaded from disk
     by ``VlmCaptioner.load``, float32 on the CPU: clips per second and generated tokens per second
     by clips per ``generate`` call (each clip ``--vlm-frames`` real frames seen as one video),
     against one clip per call. A toy model: the figures measure the code path, not a real VLM.
   - ``--model qwen2.5-vl-3b`` (GPU): Qwen2.5-VL-3B's full architecture built from its configuration with
     random weights, in bfloat16, on the same clips (``--layers N``: a quick check of the path, no figure).
2. Pipeline (``--pipeline``): the curation job with captioning on over the sample videos, on a
   local Ray; each caption actor records how long it captioned and how long it waited for input
   (the tiny model unless ``--pipeline-model`` names a real checkpoint).

Prints markdown tables; ``--record FILE`` appends them, with machine and date, to FILE.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.local_cluster import LOOPBACK_ONLY_ENV, start_local_ray  # noqa: E402

os.environ.update(LOOPBACK_ONLY_ENV)  # before anything imports ray: every Ray this benchmark starts is loopback-only

from curation.caption import Captioner  # noqa: E402
from curation.caption_vlm import VlmCaptioner  # noqa: E402
from curation.config import CaptionConfig  # noqa: E402
from curation.frames import Frame  # noqa: E402

log = logging.getLogger("bench_caption")

#: BLIP-2 OPT-2.7B (Salesforce/blip2-opt-2.7b): the vision and Q-Former defaults of transformers' configs
#: are that checkpoint's; these are its OPT-2.7B decoder's.
OPT_2_7B = {"model_type": "opt", "vocab_size": 50304, "hidden_size": 2560, "num_hidden_layers": 32, "ffn_dim": 10240,
            "num_attention_heads": 32, "word_embed_proj_dim": 2560, "max_position_embeddings": 2048,
            "bos_token_id": 2, "eos_token_id": 50118, "pad_token_id": 1}


#: Qwen2.5-VL-3B-Instruct's configuration (its config.json): the vision tower is that of every Qwen2.5-VL size.
QWEN2_5_VL_3B_TEXT = {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                      "num_attention_heads": 16, "num_key_value_heads": 2, "max_position_embeddings": 128000,
                      "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                          "mrope_section": [16, 24, 24]}}
QWEN2_5_VL_3B_VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                        "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                        "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2}


def sample_images(scratch: Path, count: int) -> list[Image.Image]:
    """``count`` real frames: evenly spaced frames of the project's sample videos, cycled."""
    from curation.frames import sample_frames
    from demo.sample_videos import make_sample_videos

    videos = make_sample_videos(scratch / "videos")
    frames = [f.image for video in videos for f in sample_frames(str(video), 8)]
    return list(itertools.islice(itertools.cycle(frames), count))


def tiny_captioner(scratch: Path, tokens: int) -> Captioner:
    from demo.tiny_blip2 import build_tiny_blip2

    model = build_tiny_blip2(scratch / "tiny-blip2")
    return Captioner.load(CaptionConfig(model_path=str(model), dtype="float32", max_new_tokens=tokens))


def full_size_captioner(dtype_name: str, tokens: int, layers: int | None) -> Captioner:
    """BLIP-2 OPT-2.7B's architecture with random weights on the GPU (``layers``: fewer, for a quick check)."""
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    from demo.tiny_blip2 import image_token_id, tiny_processor

    processor = tiny_processor(image_size=224, num_query_tokens=32)  # the prompt is only BOS: any tokenizer will do
    vision, text = {}, dict(OPT_2_7B)
    if layers is not None:
        vision["num_hidden_layers"] = text["num_hidden_layers"] = layers
    config = Blip2Config(vision_config=vision, qformer_config={}, text_config=text, num_query_tokens=32,
                         image_token_index=image_token_id(processor))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, dtype_name)
    with torch.device(device):
        model = Blip2ForConditionalGeneration(config).to(dtype)
    model.qformer.float()  # as from_pretrained keeps _keep_in_fp32_modules
    model.query_tokens.data = model.query_tokens.data.float()
    cfg = CaptionConfig(model_path="(random weights)", dtype=dtype_name, max_new_tokens=tokens)
    return Captioner(cfg, model, processor, name="blip2-opt-2.7b architecture, random weights", revision="none")


def sample_clips(scratch: Path, count: int, frames: int) -> list[list[Frame]]:
    """``count`` clips of ``frames`` real frames each: the project's sample videos, cycled."""
    from curation.frames import sample_frames
    from demo.sample_videos import make_sample_videos

    clips = [sample_frames(str(video), frames) for video in make_sample_videos(scratch / "videos")]
    return list(itertools.islice(itertools.cycle(clips), count))


def tiny_vlm_captioner(scratch: Path, frames: int) -> VlmCaptioner:
    from demo.tiny_qwen_vl import build_tiny_qwen_vl

    model = build_tiny_qwen_vl(scratch / "tiny-qwen-vl")
    return VlmCaptioner.load(CaptionConfig(model="vlm", model_path=str(model), dtype="float32", vlm_frames=frames))


def full_size_vlm_captioner(dtype_name: str, frames: int, layers: int | None) -> VlmCaptioner:
    """Qwen2.5-VL-3B's architecture with random weights (``layers``: fewer, for a quick check), its frames sized by
    Qwen2.5-VL's own processor defaults; the tiny tokenizer, whose ids the config's special tokens take."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    from demo.tiny_qwen_vl import CHAT_TEMPLATE, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(),
                                    video_processor=Qwen2VLVideoProcessor(cap_pixels_per_frame=True),
                                    tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    text, vision = dict(QWEN2_5_VL_3B_TEXT), dict(QWEN2_5_VL_3B_VISION)
    if layers is not None:
        text["num_hidden_layers"], vision["depth"], vision["fullatt_block_indexes"] = layers, layers, [layers - 1]
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids("<|image_pad|>"),
                              video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
                              vision_end_token_id=ids("<|vision_end|>"), tie_word_embeddings=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config).to(getattr(torch, dtype_name))
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = ids("<|im_end|>")
    cfg = CaptionConfig(model="vlm", model_path="(random weights)", dtype=dtype_name, vlm_frames=frames)
    return VlmCaptioner(cfg, model, processor, name="qwen2.5-vl-3b architecture, random weights", revision="none")


def vlm_table(captioner: VlmCaptioner, clips: list[list[Frame]], batch_sizes: list[int], label: str, repeats: int,
              tokens: int) -> str:
    """Clips and generated tokens per second of one clip per call (baseline) and of each batch size, best of
    ``repeats`` rounds (every setting measured in turn in each round, as ``throughput_table``)."""
    captioner.generation_config.update(min_new_tokens=tokens, max_new_tokens=tokens)
    settings = [("baseline", 1)] + [(str(b), b) for b in batch_sizes if b <= len(clips)]
    for _, batch in settings:  # warm-up: every shape once
        captioner.generate(clips[:batch])
    best = {name: (float("inf"), 0) for name, _ in settings}
    inputs_s = float("inf")  # the processor alone (resize, tokenize), one clip per call
    for _ in range(repeats):
        started = time.perf_counter()
        for clip in clips:
            captioner.inputs([clip])
        inputs_s = min(inputs_s, time.perf_counter() - started)
        for name, batch in settings:
            started, generated = time.perf_counter(), 0
            for i in range(0, len(clips), batch):
                generated += captioner.generate(clips[i:i + batch])[1]
            best[name] = min(best[name], (time.perf_counter() - started, generated))
    clip_rate = {name: len(clips) / seconds for name, (seconds, _) in best.items()}
    token_rate = {name: generated / seconds for name, (seconds, generated) in best.items()}
    log.info("%s: %s clips/s", label, {k: round(v, 2) for k, v in clip_rate.items()})
    lines = [f"{label}: {len(clips)} clips of {captioner.frames_per_clip} frames, {tokens} tokens each, best of "
             f"{repeats} rounds; baseline {clip_rate['baseline']:.2f} clips/s, {token_rate['baseline']:.1f} "
             f"tokens/s (one clip per call), of which the processor alone (resize, tokenize) "
             f"{100 * inputs_s / best['baseline'][0]:.0f}%", "",
             "| clips per call | clips/s | tokens/s | x one-at-a-time |", "|---:|---:|---:|---:|"]
    lines += [f"| {name} | {clip_rate[name]:.2f} | {token_rate[name]:.1f} | "
              f"{clip_rate[name] / clip_rate['baseline']:.2f} |" for name, _ in settings[1:]]
    return "\n".join(lines)


def seconds_per_pass(captioner: Captioner, images: list[Image.Image], batch: int) -> float:
    """Wall seconds to caption ``images``, ``batch`` per call."""
    started = time.perf_counter()
    for i in range(0, len(images), batch):
        captioner.generate(images[i:i + batch])
    return time.perf_counter() - started


def throughput_table(captioner: Captioner, images: list[Image.Image], batch_sizes: list[int], label: str,
                     repeats: int) -> str:
    """Frames per second of the one-image loop (baseline) and of each batch size, the best of ``repeats`` rounds.

    Each round measures every setting in turn, so a neighbour's load on a shared machine falls on all
    of them alike, and the best round of each counts.
    """
    captioner.generation_config.min_new_tokens = captioner.generation_config.max_new_tokens
    settings = [("baseline", 1)] + [(str(b), b) for b in batch_sizes]
    for _, batch in settings:  # warm-up: every shape once
        captioner.generate(images[:batch])
    best = dict.fromkeys((name for name, _ in settings), float("inf"))
    for _ in range(repeats):
        for name, batch in settings:
            best[name] = min(best[name], seconds_per_pass(captioner, images, batch))
    rate = {name: len(images) / seconds for name, seconds in best.items()}
    log.info("%s: %s frames/s", label, {k: round(v, 2) for k, v in rate.items()})
    lines = [f"{label}: {len(images)} frames, {captioner.generation_config.max_new_tokens} tokens each, best of "
             f"{repeats} rounds; baseline {rate['baseline']:.2f} frames/s (a loop of one image per call)", "",
             "| batch | frames/s | x one-at-a-time |", "|---:|---:|---:|"]
    lines += [f"| {name} | {rate[name]:.2f} | {rate[name] / rate['baseline']:.2f} |" for name, _ in settings[1:]]
    return "\n".join(lines)


def pipeline_table(scratch: Path, videos: Path | None, model: Path, actors: int, batch: int, cpus: int) -> str:
    """Run the curation job with captioning on; report each caption actor's busy and waiting time."""
    import ray

    from curation.config import load_config
    from curation.pipeline import run_curation
    from curation.stages.caption import read_actor_times
    from curation.workarea import WorkArea
    from demo.sample_videos import make_sample_videos

    if videos is None:
        videos = scratch / "pipeline-videos"
        make_sample_videos(videos)
    cfg = load_config(None, input=str(videos), output=str(scratch / "corpus"))
    cfg.caption.model_path, cfg.caption.actors, cfg.caption.batch_size = str(model), actors, batch
    start_local_ray(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_curation(cfg)
    finally:
        ray.shutdown()
    records = [r for r in read_actor_times(WorkArea.of(cfg.output)) if r["clips"]]
    lines = [f"Pipeline over {videos}: {summary.corpus['clips']} clips from {summary.sources} videos, "
             f"{summary.seconds:.1f} s, {cpus} Ray CPUs, {actors} caption actor(s), {batch} clips per batch", "",
             "| actor | device | model load s | captioning s | waiting for input s | busy | clips | batches |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for n, r in enumerate(records):
        busy = r["busy_s"] / max(r["busy_s"] + r["wait_s"], 1e-9)
        lines.append(f"| {n} | {r['device']} {r['dtype']} | {r['load_s']:.1f} | {r['busy_s']:.1f} | {r['wait_s']:.1f} "
                     f"| {100 * busy:.0f}% | {r['clips']} | {r['batches']} |")
    return "\n".join(lines)


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {gpu}; "
            f"torch {torch.__version__}, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(prog="python benchmarks/bench_caption.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "opt-2.7b", "tiny-vlm", "qwen2.5-vl-3b"],
                        default="opt-2.7b" if torch.cuda.is_available() else "tiny",
                        help="tiny untrained model (CPU, float32) or BLIP-2 OPT-2.7B's architecture (GPU)")
    parser.add_argument("--dtypes", default=None,
                        help="weight dtypes for the full-size models (default: opt-2.7b float16,bfloat16; "
                             "qwen2.5-vl-3b bfloat16)")
    parser.add_argument("--clips", type=int, default=16, help="clips captioned per measurement (VLM models)")
    parser.add_argument("--vlm-frames", type=int, default=8, help="frames per clip (VLM models)")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64", help="images per generate call")
    parser.add_argument("--frames", type=int, default=128, help="frames captioned per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over every setting; the best of each counts")
    parser.add_argument("--tokens", type=int, default=20, help="tokens generated per caption (fixed)")
    parser.add_argument("--layers", type=int, default=None,
                        help="opt-2.7b with this many vision and text layers: a quick check of the path, no figure")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for --model tiny (a CPU caption actor has resources.caption_cpus: 1)")
    parser.add_argument("--pipeline", action="store_true", help="also run the job and report actor waiting time")
    parser.add_argument("--pipeline-input", help="videos for --pipeline (default: the project's sample videos)")
    parser.add_argument("--pipeline-model", help="BLIP-2 directory for --pipeline (default: the tiny model)")
    parser.add_argument("--actors", type=int, default=1, help="caption actors in --pipeline")
    parser.add_argument("--caption-batch", type=int, default=4, help="clips per caption batch in --pipeline")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="Ray CPUs in --pipeline")
    parser.add_argument("--record", help="append the tables, with machine and date, to this markdown file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    tables = []
    with tempfile.TemporaryDirectory(prefix="bench-caption-") as tmp:
        scratch = Path(tmp)
        if args.model in ("tiny-vlm", "qwen2.5-vl-3b"):
            clips = sample_clips(scratch, args.clips, args.vlm_frames)
        else:
            images = sample_images(scratch, args.frames)
        if args.model == "tiny-vlm":
            captioner = tiny_vlm_captioner(scratch, args.vlm_frames)
            torch.set_num_threads(args.threads)
            label = f"tiny Qwen2.5-VL (untrained), float32, CPU, {args.threads} torch thread(s)"
            tables.append(vlm_table(captioner, clips, batch_sizes, label, args.repeats, args.tokens))
        elif args.model == "qwen2.5-vl-3b":
            for dtype in (args.dtypes or "bfloat16").split(","):
                captioner = full_size_vlm_captioner(dtype, args.vlm_frames, args.layers)
                depth = "" if args.layers is None else f", cut to {args.layers} layer(s): a check, not a figure"
                label = f"Qwen2.5-VL-3B architecture (random weights{depth}), {dtype}, {captioner.device}"
                tables.append(vlm_table(captioner, clips, batch_sizes, label, args.repeats, args.tokens))
                del captioner
                torch.cuda.empty_cache()
        elif args.model == "tiny":
            captioner = tiny_captioner(scratch, args.tokens)
            torch.set_num_threads(args.threads)
            label = f"tiny BLIP-2, float32, CPU, {args.threads} torch thread(s)"
            tables.append(throughput_table(captioner, images, batch_sizes, label, args.repeats))
        else:
            for dtype in (args.dtypes or "float16,bfloat16").split(","):
                captioner = full_size_captioner(dtype, args.tokens, args.layers)
                depth = "" if args.layers is None else f", cut to {args.layers} layer(s): a check, not a figure"
                label = f"BLIP-2 OPT-2.7B architecture (random weights{depth}), {dtype}, {captioner.device}"
                tables.append(throughput_table(captioner, images, batch_sizes, label, args.repeats))
                del captioner
                torch.cuda.empty_cache()
        if args.pipeline:
            from demo.tiny_blip2 import build_tiny_blip2

            model = Path(args.pipeline_model) if args.pipeline_model else build_tiny_blip2(scratch / "pipe-blip2")
            videos = Path(args.pipeline_input) if args.pipeline_input else None
            tables.append(pipeline_table(scratch, videos, model, args.actors, args.caption_batch, args.cpus))
    report = f"Machine: {machine()}\n\n" + "\n\n".join(tables) + "\n"
    print(report)
    if args.record:
        with open(args.record, "a") as fh:
            fh.write("\n" + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
