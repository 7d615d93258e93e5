"""The caption stage on a tiny untrained BLIP-2, loaded by the real code, end to end through Ray Data.

The tiny model (``demo.tiny_blip2``) has random weights, so its captions mean nothing; what is
tested is that frames reach the model, captions reach ``<key>.txt``, the json and the index,
every clip names its model, resume does not recompute, and failures cost one row (the stage class
``curation.stages.caption.Caption`` run as the runner runs it, ``curation.runner.run_stage``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from curation.caption import Captioner, clean_caption, model_identity
from curation.config import CaptionConfig, CurationConfig, load_config
from curation.frames import frame_times, middle_index, sample_frames
from curation.pipeline import run_curation
from curation.runner import run_stage
from curation.stage import JobResources, StageContext
from curation.stages import stage_class
from curation.stages.caption import read_actor_times
from curation.workarea import WorkArea
from demo.tiny_blip2 import TINY_MODEL_NAME, build_tiny_blip2
from shards.reader import iter_samples, read_index, read_manifest
from shards.validate import validate

FRAMES = 3


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_blip2(tmp_path_factory.mktemp("models") / "tiny-blip2")


def caption_config(input_dir: Path, output: Path, model: Path, **caption):
    cfg = load_config(None, input=str(input_dir), output=str(output))
    cfg.split.min_duration = 1.0
    cfg.caption.model_path = str(model)
    cfg.caption.batch_size = 2
    cfg.filter.enabled = False  # tests/test_filters.py runs the filters
    for key, value in caption.items():
        setattr(cfg.caption, key, value)
    return cfg


@pytest.fixture(scope="module")
def videos(sample_videos: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("caption-input")
    shutil.copy(sample_videos / "three_scenes.mp4", folder / "three_scenes.mp4")  # inside the input
    return folder


@pytest.fixture(scope="module")
def corpus(local_ray, videos: Path, tiny_model: Path, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("captioned") / "corpus"
    run_curation(caption_config(videos, output, tiny_model, frames=FRAMES))
    return output


def clips_of(corpus: Path, folder: Path) -> dict[str, Path]:
    """Each clip of the corpus, copied out of its shard (the work area's clips leave once their shard is written)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for sample in iter_samples(corpus):
        out[sample["key"]] = folder / f"{sample['key']}.mp4"
        out[sample["key"]].write_bytes(sample["mp4"])
    return out


def caption_state(corpus: Path) -> list[dict[str, Any]]:
    """Every row the caption operator persisted, over the corpus's partitions."""
    work = WorkArea.of(corpus)
    return [r for p in work.read_partition_table()["partition"].to_pylist()
            for r in work.read_state("caption", p).to_pylist()]


def test_every_clip_gets_the_caption_of_its_middle_frame_from_the_model(corpus: Path, tiny_model: Path,
                                                                        tmp_path: Path):
    index = read_index(corpus).to_pylist()
    assert len(index) >= 3
    captioner = Captioner.load(CaptionConfig(model_path=str(tiny_model)))
    clip_paths = {key: str(path) for key, path in clips_of(corpus, tmp_path / "clips").items()}
    persisted = {r["key"]: r for r in caption_state(corpus)}
    for row in index:
        assert persisted[row["key"]]["caption"] == row["caption"]
        assert persisted[row["key"]]["captions"] == row["captions"]
        listed = json.loads(row["captions"])
        frames = sample_frames(clip_paths[row["key"]], FRAMES)
        assert [c["time"] for c in listed] == [f.time for f in frames]
        wanted = frame_times(row["clip_duration"], FRAMES)
        assert all(0 <= c["time"] - t < 1 / row["clip_fps"] + 1e-6 for c, t in zip(listed, wanted, strict=True))
        assert [c["text"] for c in listed] == captioner.caption([f.image for f in frames])
        assert row["caption"] == listed[middle_index(FRAMES)]["text"] != ""
    assert len({row["caption"] for row in index}) > 1, "different frames must give different captions"


def test_captions_land_in_txt_json_and_index_and_name_the_model(corpus: Path):
    index = {row["key"]: row for row in read_index(corpus).to_pylist()}
    samples = list(iter_samples(corpus))
    assert {s["key"] for s in samples} == set(index)
    for sample in samples:
        row = index[sample["key"]]
        assert sample["txt"] == row["caption"] == sample["json"]["caption"]
        assert sample["json"]["caption_model"] == row["caption_model"] == TINY_MODEL_NAME
        assert sample["json"]["caption_revision"] == "unknown"
    assert validate(corpus).ok, validate(corpus).summary()


def test_caption_actors_account_for_their_time(corpus: Path):
    records = read_actor_times(WorkArea.of(corpus))
    assert records
    assert sum(r["clips"] for r in records) == read_manifest(corpus)["counts"]["clips"]
    assert all(r["busy_s"] > 0 and r["wait_s"] >= 0 and r["device"] == "cpu" for r in records if r["clips"])


def test_rerun_does_not_caption_again(corpus: Path):
    results = sorted((corpus / "work" / "state" / "caption").rglob("*.parquet"))
    assert results, "the caption operator persisted its results"
    before = {p: p.stat().st_mtime_ns for p in results}
    actors = sorted((corpus / "work" / "state" / "caption" / "_actors").glob("*.json"))
    assert actors
    actor_records = {p: p.read_text() for p in actors}
    index = read_index(corpus)
    run_curation(load_config(None, **read_manifest(corpus)["config"]))
    assert sorted((corpus / "work" / "state" / "caption").rglob("*.parquet")) == results
    assert {p: p.stat().st_mtime_ns for p in results} == before
    assert {p: p.read_text() for p in sorted((corpus / "work" / "state" / "caption" / "_actors").glob("*.json"))} \
        == actor_records, "no caption actor worked"
    assert read_index(corpus).equals(index)


def test_missing_weights_stop_the_job_before_any_work(local_ray, videos: Path, tmp_path: Path):
    cfg = caption_config(videos, tmp_path / "corpus", tmp_path / "no-such-model")
    with pytest.raises(FileNotFoundError, match="hf download Salesforce/blip2-opt-2.7b --local-dir") as caught:
        run_curation(cfg)
    assert "caption.enabled: false" in str(caught.value)
    assert not list((tmp_path / "corpus").rglob("*.parquet")), "no stage ran, not even the ingest"


def test_gpus_asked_of_a_cluster_without_any_are_refused(local_ray, videos: Path, tiny_model: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="no GPU"):
        run_curation(caption_config(videos, tmp_path / "corpus", tiny_model, num_gpus=1))


def test_cpu_caption_actors_reserve_no_cpu_but_caption_with_their_threads(tiny_model: Path, tmp_path: Path):
    """Without GPUs an actor holding a CPU for the whole job would idle on it while it waits for clips, and Ray
    would run one CPU task fewer (on 2 CPUs, the CPU stages one at a time); with GPUs it keeps its CPU."""
    import torch

    cfg = caption_config(tmp_path, tmp_path / "corpus", tiny_model)
    cfg.resources.caption_cpus = 2.0
    caption = stage_class("caption")
    assert caption.resources(cfg, JobResources(cluster_gpus=0)).num_cpus == 0
    assert caption.resources(cfg, JobResources(cluster_gpus=1)).num_cpus == 2.0
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        caption(cfg).setup()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def clip_rows(corpus: Path, folder: Path, count: int) -> list[dict[str, Any]]:
    """``count`` clips of the corpus as the stage before captioning hands them over (uncaptioned, files local)."""
    clips = clips_of(corpus, folder)
    rows = []
    for row in read_index(corpus).to_pylist()[:count]:
        row = {k: v for k, v in row.items() if k not in ("shard", "caption", "captions", "caption_model",
                                                         "caption_revision")}
        rows.append({**row, "clip_path": str(clips[row["key"]]), "status": "ok", "stage": "filter"})
    assert len(rows) == count
    return rows


def caption_stage(output: Path, model: Path, batch_size: int = 2):
    """The caption stage as a runner's worker holds it: built from the config, set up once."""
    cfg = caption_config(output, output / "corpus", model, frames=FRAMES, batch_size=batch_size)
    stage = stage_class("caption")(cfg)
    stage.setup()
    return stage


def run_caption(stage, rows: list[dict[str, Any]], scratch: Path) -> list[dict[str, Any]]:
    scratch.mkdir(parents=True, exist_ok=True)
    return run_stage(stage, rows, StageContext(WorkArea.of(stage.cfg.output), scratch))


def test_empty_and_unreadable_clips_cost_their_own_row(corpus: Path, tiny_model: Path, tmp_path: Path):
    rows = clip_rows(corpus, tmp_path / "clips", 2)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    rows.append({**rows[0], "key": "broken_0000", "clip_path": str(broken)})

    stage = caption_stage(tmp_path, tiny_model, batch_size=3)  # the broken clip in the same batch
    direct = stage.process(rows, StageContext(WorkArea.of(stage.cfg.output), tmp_path))
    assert [(r["key"], r["status"]) for r in direct] == [(rows[0]["key"], "ok"), (rows[1]["key"], "ok"),
                                                        ("broken_0000", "rejected")]
    out = run_caption(stage, rows, tmp_path / "scratch")
    assert [(r["key"], r["status"]) for r in out] == [(rows[0]["key"], "ok"), (rows[1]["key"], "ok"),
                                                     ("broken_0000", "rejected")]
    assert out[2]["reason"] == "frame_unreadable" and out[2]["stage"] == "caption" and out[2]["detail"]
    assert all(r["caption"] and r["stage"] == "caption" and r["caption_model"] == TINY_MODEL_NAME for r in out[:2])

    silent = caption_stage(tmp_path / "silent-run", build_tiny_blip2(tmp_path / "silent", silent=True))
    out = run_caption(silent, rows[:2], tmp_path / "scratch-silent")
    assert [(r["status"], r["reason"], r["stage"]) for r in out] == [("rejected", "empty_caption", "caption")] * 2
    assert all("no usable text" in r["detail"] for r in out)


def test_a_failing_batch_is_captioned_clip_by_clip(corpus: Path, tiny_model: Path, tmp_path: Path):
    """A model call that fails on a whole batch (say, out of GPU memory) is redone per clip by the runner."""
    rows = clip_rows(corpus, tmp_path / "clips", 3)
    expected = {r["key"]: r for r in run_caption(caption_stage(tmp_path / "plain", tiny_model), rows,
                                                 tmp_path / "scratch-plain")}
    assert all(r["status"] == "ok" for r in expected.values())

    stage = caption_stage(tmp_path / "failing", tiny_model)
    model_call = stage.captioner.caption
    calls: list[int] = []

    def fails_on_batches(images):
        calls.append(len(images))
        if len(images) > FRAMES:
            raise RuntimeError("CUDA out of memory (simulated)")
        return model_call(images)

    stage.captioner.caption = fails_on_batches
    out = run_caption(stage, rows, tmp_path / "scratch")
    # batches of 2: the first fails and is redone clip by clip; the second holds one clip and succeeds
    assert calls == [2 * FRAMES, FRAMES, FRAMES, FRAMES]
    assert [r["key"] for r in out] == [r["key"] for r in rows]
    for row in out:
        assert (row["status"], row["stage"]) == ("ok", "caption")
        assert row["captions"] == expected[row["key"]]["captions"] and row["caption"]

    # a clip on which the model fails even alone costs that clip only
    poison = {image.tobytes() for image in (f.image for f in sample_frames(rows[1]["clip_path"], FRAMES))}

    def fails_on_one_clip(images):
        if any(image.tobytes() in poison for image in images):
            raise RuntimeError("the model broke on this clip (simulated)")
        return model_call(images)

    stage.captioner.caption = fails_on_one_clip
    out = run_caption(stage, rows, tmp_path / "scratch-2")
    assert [(r["key"], r["status"], r.get("reason")) for r in out] == [
        (rows[0]["key"], "ok", None), (rows[1]["key"], "rejected", "internal_error"), (rows[2]["key"], "ok", None)]
    assert "the model broke on this clip" in out[1]["detail"] and out[1]["stage"] == "caption"
    assert out[0]["captions"] == expected[rows[0]["key"]]["captions"]


def test_model_identity_reads_the_hub_commit_that_hf_download_records(tiny_model: Path, tmp_path: Path):
    assert model_identity(tiny_model) == (TINY_MODEL_NAME, "unknown")
    real = tmp_path / "blip2-opt-2.7b"
    (real / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (real / "config.json").write_text(json.dumps({"model_type": "blip-2"}))
    commit = "51572668da0eb669e01a189dc22abe6088589a24"
    (real / ".cache" / "huggingface" / "download" / "config.json.metadata").write_text(f"{commit}\netag\n1700000000\n")
    assert model_identity(real) == ("blip2-opt-2.7b", commit)


@pytest.mark.parametrize(("raw", "prompt", "clean"), [
    ("  a dog \n running  on   grass ", "", "a dog running on grass"),
    ("a man riding a horse a man riding a horse", "", "a man riding a horse"),
    ("a cat cat cat sitting on a sofa", "", "a cat sitting on a sofa"),
    ("A video of a red car on a road", "a video of", "a red car on a road"),
    ("a video of", "a video of", ""),
    (" \n\t ", "", ""),
    ("two dogs and two cats", "", "two dogs and two cats"),
])
def test_clean_caption(raw: str, prompt: str, clean: str):
    assert clean_caption(raw, prompt) == clean


def test_frame_times_split_the_clip_evenly_and_include_the_middle():
    assert frame_times(4.0, 1) == [2.0]
    assert frame_times(3.0, 3) == [0.5, 1.5, 2.5]
    assert frame_times(3.0, 3)[middle_index(3)] == 1.5


def test_caption_fingerprint_follows_what_captions_say_not_how_fast_they_come():
    base = CurationConfig()
    faster = CurationConfig(caption=CaptionConfig(batch_size=64, actors=8, num_gpus=1))
    prompted = CurationConfig(caption=CaptionConfig(prompt="a video of"))
    assert faster.fingerprint("caption") == base.fingerprint("caption")
    assert prompted.fingerprint("caption") != base.fingerprint("caption")
    assert prompted.fingerprint("write") != base.fingerprint("write")
    assert prompted.fingerprint("extract") == base.fingerprint("extract")


@pytest.mark.parametrize(("field", "value"), [("dtype", "int8"), ("frames", 0), ("num_beams", 0), ("num_gpus", -1)])
def test_bad_caption_settings_are_refused_with_what_to_fix(field: str, value):
    cfg = CurationConfig(input="/in", output="/out")
    with pytest.raises(ValueError, match=f"CaptionConfig: {field}: Input should be"):
        setattr(cfg.caption, field, value)
    with pytest.raises(ValueError, match=rf"caption\.{field}: Input should be"):
        CurationConfig.from_dict({"caption": {field: value}})
