"""Evaluation (training.evaluate, jobs.evaluate): FVD against hand computations, I3D preprocessing and loading,
CLIPSIM's arithmetic, the held-out loss's determinism, and the CLI end to end on a tiny checkpoint with tiny
UNTRAINED encoders, CLIP and I3D built from configs (their numbers mean nothing; the machinery is tested).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.torch import save_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from demo.tiny_training import make_tiny_pretrained, tiny_tokenizer
from jobs.cli import main as cli_main
from jobs.evaluate import main as evaluate_main
from tests.test_train_loop import CPU, tiny_config
from tests.train_corpus import write_corpus
from training.checkpoint import list_checkpoints, load_checkpoint_config, load_weights
from training.encoders import TextEncoder, VideoVAE
from training.evaluate import bucket_edges, frame_difference, heldout_loss, load_held_out
from training.metrics.clipsim import ClipScorer, clipsim_from_embeddings
from training.metrics.fvd import frechet_distance, fvd_from_features
from training.metrics.i3d import InceptionI3d, i3d_features, load_i3d, preprocess
from training.trainer import Trainer, build_unet

pytestmark = pytest.mark.usefixtures("one_thread")


# --- FVD: the Fréchet distance ----------------------------------------------------------------------------


def test_the_frechet_distance_of_diagonal_gaussians_is_the_closed_form() -> None:
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))  # 1 + 6.25 + (4 + 1 + 0) = 12.25
    assert expected == pytest.approx(12.25)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(12.25, abs=1e-9)
    assert frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0.0, abs=1e-9)


def test_the_frechet_distance_of_full_covariances_matches_scipy_sqrtm() -> None:
    """Non-commuting covariances: tr sqrtm(S1 S2) by scipy (the pytorch-fid form) is the same number."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fvd_of_gaussian_features_is_the_hand_computation() -> None:
    rng = np.random.default_rng(1)
    mu1, mu2 = np.array([0.0, 2.0, -1.0, 0.5]), np.array([1.0, 0.0, -1.0, 0.0])
    sd1, sd2 = np.array([1.0, 0.5, 2.0, 1.0]), np.array([2.0, 0.5, 1.0, 1.0])
    real, fake = rng.normal(mu1, sd1, size=(20_000, 4)), rng.normal(mu2, sd2, size=(20_000, 4))
    # by hand: sample means, unbiased covariances, and tr sqrtm(S1 S2)
    m1, m2 = real.sum(0) / len(real), fake.sum(0) / len(fake)
    c1 = (real - m1).T @ (real - m1) / (len(real) - 1)
    c2 = (fake - m2).T @ (fake - m2) / (len(fake) - 1)
    by_hand = ((m1 - m2) ** 2).sum() + np.trace(c1 + c2) - 2 * np.trace(scipy.linalg.sqrtm(c1 @ c2)).real
    assert fvd_from_features(real, fake) == pytest.approx(by_hand, rel=1e-9)
    # and close to the population's closed form: ||mu1 - mu2||^2 + sum (s1 + s2 - 2 sqrt(s1 s2)) = 5.25 + 2
    population = ((mu1 - mu2) ** 2).sum() + (sd1**2 + sd2**2 - 2 * sd1 * sd2).sum()
    assert population == pytest.approx(7.25)
    assert fvd_from_features(real, fake) == pytest.approx(population, rel=0.03)
    assert fvd_from_features(real, real) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="N >= 2"):
        fvd_from_features(real[:1], fake)


# --- I3D ------------------------------------------------------------------------------------------------


def test_i3d_preprocessing_resizes_to_224_resamples_16_frames_and_scales_to_minus_one_one() -> None:
    video = np.zeros((1, 4, 36, 64, 3), dtype=np.uint8)
    for t in range(4):
        video[0, t] = 85 * t  # 0, 85, 170, 255
    pixels = preprocess(video)
    assert pixels.shape == (1, 3, 16, 224, 224) and pixels.dtype == torch.float32
    # frame j of 16 is source frame round(j * 3 / 15); constant frames stay constant through the resize
    expected = [2 * 85 * round(j * 3 / 15) / 255 - 1 for j in range(16)]
    assert torch.allclose(pixels[0, :, :, 100, 100].T, torch.tensor(expected).unsqueeze(1).expand(16, 3), atol=1e-6)
    assert pixels.min() == -1 and float(pixels.max()) == pytest.approx(1, abs=1e-5)
    # a 16-frame video keeps its frames; the resize is bilinear over the whole frame (no crop)
    row = np.linspace(0, 255, 64).astype(np.uint8)[None, None, None, :, None]
    ramp = np.broadcast_to(row, (1, 16, 36, 64, 3)).copy()
    resized = preprocess(ramp, size=32)
    reference = torch.nn.functional.interpolate(torch.from_numpy(ramp[0].copy()).permute(0, 3, 1, 2).float(),
                                                size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(resized[0].transpose(0, 1), 2 * reference / 255 - 1, atol=1e-6)
    assert resized[0, 0, 0, 0, 0] == pytest.approx(-1, abs=0.05)
    assert resized[0, 0, 0, 0, -1] == pytest.approx(1, abs=0.05)
    with pytest.raises(ValueError, match="RGB"):
        preprocess(np.zeros((1, 4, 8, 8), dtype=np.uint8))


def random_i3d(seed: int = 0) -> InceptionI3d:
    """A random I3D whose features are O(1) (PyTorch's default init shrinks them to ~1e-8 over 20 layers) and whose
    BatchNorm statistics are not the identity, so comparisons of its outputs mean something."""
    torch.manual_seed(seed)
    model = InceptionI3d().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv3d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif isinstance(module, torch.nn.BatchNorm3d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return model


def test_i3d_has_the_reference_layout_and_loads_state_dicts(tmp_path: Path) -> None:
    model = random_i3d()
    state = model.state_dict()
    assert state["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert state["Mixed_4f.b1b.conv3d.weight"].shape == (320, 160, 3, 3, 3)
    assert state["Mixed_5c.b3b.bn.running_var"].shape == (128,)
    assert state["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1) and state["logits.conv3d.bias"].shape == (400,)
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d))
    torch.save({f"module.{k}": v for k, v in state.items() if "num_batches" not in k}, tmp_path / "i3d.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "i3d.safetensors"))
    videos = np.random.default_rng(0).integers(0, 256, size=(2, 16, 32, 32, 3), dtype=np.uint8)
    expected = i3d_features(model, videos, size=32)
    assert expected.shape == (2, 400) and expected.std() > 1e-2 and not np.allclose(expected[0], expected[1])
    assert i3d_features(model, videos, layer="pool", size=32).shape == (2, 1024)
    for name in ("i3d.pt", "i3d.safetensors"):
        assert np.allclose(i3d_features(load_i3d(tmp_path / name), videos, size=32), expected, atol=1e-5)
    torch.save(model, tmp_path / "whole_module.pt")  # a pickled module is not a state dict: refused, explained
    with pytest.raises(ValueError, match="state dict"):
        load_i3d(tmp_path / "whole_module.pt")
    with pytest.raises(FileNotFoundError, match="pytorch-i3d"):
        load_i3d(tmp_path / "missing.pt")


# --- CLIPSIM --------------------------------------------------------------------------------------------


def test_clipsim_is_the_cosine_of_given_embeddings() -> None:
    image = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [-1.0, 0.0]])
    assert np.allclose(clipsim_from_embeddings(image, np.array([5.0, 0.0])), [1.0, 0.0, 2**-0.5, -1.0])


def make_tiny_clip(root: Path) -> Path:
    """An UNTRAINED tiny CLIPModel (32x32 images) and its CLIPProcessor, saved as a local directory."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(root)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(root)
    return root


def test_the_clip_scorer_gives_clips_own_cosines(tmp_path: Path) -> None:
    """Each frame's similarity is CLIP's logits_per_image divided by its logit scale (CLIP's own forward)."""
    scorer = ClipScorer(make_tiny_clip(tmp_path / "clip"))
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 48, 64, 3), dtype=np.uint8)
    got = scorer.similarities(frames, "testsrc clip")
    assert got.shape == (3,) and np.all(np.abs(got) <= 1)
    inputs = scorer.processor(text=["testsrc clip"], images=list(frames), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = scorer.model(**inputs)
    assert np.allclose(got, (out.logits_per_image[:, 0] / scorer.model.logit_scale.exp()).numpy(), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="hf download"):
        ClipScorer(tmp_path / "nowhere")


# --- the held-out loss and the CLI on a tiny checkpoint ----------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 1-step tiny training run on one corpus, and a held-out corpus of other clips."""
    root = tmp_path_factory.mktemp("evaluate")
    material = {"pretrained": make_tiny_pretrained(root / "pretrained")}
    write_corpus(root / "train", [9, 9], shards=1, name="train")
    write_corpus(root / "heldout", [9, 9, 5, 9], shards=1, name="heldout",
                 patterns=["mandelbrot", "testsrc", "yuvtestsrc", "pal75bars"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = tiny_config(material, root / "train", root / "run", steps=1, checkpoint_every=1, data__workers=0)
    Trainer(cfg, CPU).train()
    torch.set_num_threads(threads)
    return {"material": material, "root": root, "train": root / "train", "heldout": root / "heldout",
            "output": root / "run", "checkpoint": list_checkpoints(root / "run")[-1]}


def test_the_held_out_loss_is_deterministic_and_depends_on_the_weights(run: dict) -> None:
    cfg = load_checkpoint_config(run["checkpoint"], ["eval.buckets=4", "eval.batch_size=2"])
    text, vae = TextEncoder(cfg.model.text_encoder, cfg.model.tokenizer), VideoVAE(cfg.model.vae)
    clips = load_held_out(str(run["heldout"]), cfg, count=3)
    assert [c.key for c in clips] == ["heldout_0000", "heldout_0001", "heldout_0003"]  # the 5-frame clip is short
    assert clips[0].frames.shape == (4, 144, 256, 3)
    model = build_unet(cfg, text.hidden_size, vae.channels, (18, 32))
    load_weights(run["checkpoint"], model)
    model.eval()
    state = torch.get_rng_state()
    first = heldout_loss(model, cfg, clips, text, vae)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    second = heldout_loss(model, cfg, clips, text, vae)
    assert first == second
    assert [b["timesteps"] for b in first["buckets"]] == [[0, 250], [250, 500], [500, 750], [750, 1000]]
    assert first["loss"] == pytest.approx(sum(b["loss"] for b in first["buckets"]) / 4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    other = heldout_loss(model, cfg, clips, text, vae)
    assert all(a["loss"] != b["loss"] for a, b in zip(first["buckets"], other["buckets"]))
    reseeded = heldout_loss(model, load_checkpoint_config(run["checkpoint"], ["eval.buckets=4", "eval.seed=1"]),
                            clips, text, vae)
    assert reseeded["loss"] != other["loss"]
    assert bucket_edges(1000, 10)[:3] == [0, 100, 200]
    assert frame_difference([np.stack([np.zeros((2, 2, 3)), np.full((2, 2, 3), 51)]).astype(np.uint8)]) == \
        pytest.approx(0.2)


SMALL = ["--set", "eval.clips=3", "--set", "eval.buckets=4", "--set", "eval.sample_steps=2",
         "--set", "eval.num_prompts=1", "--set", "eval.guidance=2"]


def test_evaluate_writes_the_weight_free_metrics_and_skips_the_others_with_a_reason(run: dict, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    assert cli_main(["evaluate", "--checkpoint", str(run["output"]), "--corpus", str(run["heldout"]),
                     "--out", str(out), *SMALL]) == 0
    results = json.loads((out / "metrics.json").read_text())
    metrics, skipped, settings = results["metrics"], results["skipped"], results["settings"]
    assert results["step"] == 1 and results["weights"] == "ema"
    assert len(metrics["heldout_loss_buckets"]) == 4 and metrics["heldout_loss"] > 0
    assert 0 <= metrics["frame_difference"] <= 1 and 0 < metrics["frame_difference_real"] <= 1
    assert "clipsim" not in metrics and "fvd" not in metrics
    assert "--clip-model" in skipped["clipsim"] and "--i3d-weights" in skipped["fvd"]
    assert settings["clips"] == 3 and settings["clip_keys"] == ["heldout_0000", "heldout_0001", "heldout_0003"]
    assert settings["prompts"] == ["mandelbrot clip 0"] and settings["seeds"] == [0] and settings["samples"] == 1
    table = (out / "metrics.md").read_text()
    assert "| heldout_loss | " in table and "| clipsim | skipped |" in table and "| 750-999 |" in table
    assert (out / "samples" / "000-seed0.mp4").stat().st_size > 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("eval/heldout_loss")] == \
        [(1, pytest.approx(metrics["heldout_loss"]))]
    assert "eval/heldout_loss/t000-249" in events.Tags()["scalars"]
    again = tmp_path / "again"  # the same numbers on a second run
    assert evaluate_main(["--checkpoint", str(run["checkpoint"]), "--corpus", str(run["heldout"]), "--out",
                          str(again), "--no-samples", *SMALL]) == 0
    assert json.loads((again / "metrics.json").read_text())["metrics"] == metrics
    # the training corpus is refused as held-out, and a missing weights path is an error, not a skip
    assert evaluate_main(["--checkpoint", str(run["output"]), "--corpus", str(run["train"]), "--out",
                          str(tmp_path / "x")]) == 2
    assert evaluate_main(["--checkpoint", str(run["output"]), "--corpus", str(run["heldout"]), "--out",
                          str(tmp_path / "y"), "--i3d-weights", str(tmp_path / "none.pt")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_evaluate_computes_clipsim_and_fvd_with_local_weights(run: dict, tmp_path: Path) -> None:
    clip = make_tiny_clip(tmp_path / "clip")
    torch.save(random_i3d().state_dict(), tmp_path / "i3d.pt")
    out = tmp_path / "eval"
    assert evaluate_main(["--checkpoint", str(run["output"]), "--corpus", str(run["heldout"]), "--out", str(out),
                          "--clip-model", str(clip), "--i3d-weights", str(tmp_path / "i3d.pt"), "--no-samples",
                          *SMALL, "--set", "eval.seeds=[0, 1]", "--set", "eval.fvd_size=32"]) == 0
    results = json.loads((out / "metrics.json").read_text())
    metrics = results["metrics"]
    assert results["skipped"] == {}
    assert -1 <= metrics["clipsim"] <= 1 and metrics["clipsim"] != 0
    assert np.isfinite(metrics["fvd"]) and metrics["fvd"] > 0
    assert results["settings"]["samples"] == 2 and results["settings"]["i3d_features"] == "logits"
    table = (out / "metrics.md").read_text()
    assert "| clipsim | " in table and "| fvd | " in table and "skipped" not in table


def test_the_trainer_evaluates_every_n_steps_without_changing_training(run: dict, tmp_path: Path) -> None:
    material = run["material"]
    base = dict(steps=2, checkpoint_every=2, log_every=1, data__workers=0)
    plain = Trainer(tiny_config(material, run["train"], tmp_path / "plain", **base), CPU).train()
    evaluated = tiny_config(material, run["train"], tmp_path / "eval", **base, eval__every=1,
                            eval__corpus=str(run["heldout"]), eval__clips=2, eval__buckets=2, eval__sample_steps=1,
                            eval__num_prompts=1)
    assert Trainer(evaluated, CPU).train() == plain  # evaluation leaves the RNG and the data stream alone
    events = EventAccumulator(str(tmp_path / "eval" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/heldout_loss")] == [1, 2]
    assert [e.step for e in events.Scalars("eval/frame_difference")] == [1, 2]
    with pytest.raises(ValueError, match="eval.corpus is empty"):
        tiny_config(material, run["train"], tmp_path / "x", eval__every=1).check()
    with pytest.raises(ValueError, match="one of data.corpora"):
        tiny_config(material, run["train"], tmp_path / "x", eval__corpus=str(run["train"])).check()
