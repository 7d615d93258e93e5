"""Initialising the video U-Net from a pretrained image U-Net (``model.init_from``, training.model.pretrained).

The 2D model is the real diffusers ``UNet2DConditionModel``, tiny and random (every tensor perturbed, so that
no two tensors of one kind are equal and a misplaced one changes the output), saved with ``save_pretrained``
and loaded from that directory by the real code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from training.config import load_config
from training.model import ATTENTION_VARIANTS, UNetConfig, VideoUNet, pretrained
from training.model.pretrained import (
    VIDEO_ONLY,
    PretrainedMappingError,
    load_2d_weights,
    read_2d_config,
    unet_config_from_2d,
    video_unet_from_2d,
)

ROOT = Path(__file__).resolve().parent.parent
T = 3  # odd: the (2, 2, 2) windows of the cross-stream attention need padding in time

#: A tiny Stable-Diffusion-2-like 2D U-Net: cross-attention at the top level only, linear projections, 2 heads
#: of 16 channels at 32 channels and 4 at 64 (diffusers' ``attention_head_dim`` is the number of heads).
TINY_2D = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
               cross_attention_dim=32, attention_head_dim=(2, 4), norm_num_groups=8,
               down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), use_linear_projection=True)

#: Stable Diffusion 2.1 base's unet/config.json (the keys that matter here).
SD21_BASE = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0,
    "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "num_class_embeds": None, "only_cross_attention": False, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True, "upcast_attention": False,
}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_2d(seed: int = 0, **overrides: object) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    model = UNet2DConditionModel(**{**TINY_2D, **overrides}).eval()
    with torch.no_grad():
        for p in model.parameters():  # norms start at 1/0 and would hide a swapped pair
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def unet2d_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sd-like") / "unet"
    tiny_2d().save_pretrained(path)  # safetensors
    return path


@pytest.fixture(scope="module")
def unet2d(unet2d_dir: Path) -> UNet2DConditionModel:
    return pretrained.load_unet2d(unet2d_dir).eval()


def inputs(b: int = 2, t: int = T, h: int = 8, w: int = 8):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(b, 4, t, h, w, generator=g), torch.tensor([17, 803])[:b],
            torch.randn(b, 5, 32, generator=g))


@torch.no_grad()
def per_frame_reference(unet2d: UNet2DConditionModel, latents: torch.Tensor, steps: torch.Tensor,
                        text: torch.Tensor) -> torch.Tensor:
    """The 2D U-Net run on every frame on its own (frames folded into the batch)."""
    b, c, t, h, w = latents.shape
    out = unet2d(latents.transpose(1, 2).reshape(b * t, c, h, w), steps.repeat_interleave(t),
                 text.repeat_interleave(t, dim=0)).sample
    return out.view(b, t, -1, h, w).transpose(1, 2)


def max_difference(model: VideoUNet, unet2d: UNet2DConditionModel) -> float:
    latents, steps, text = inputs()
    with torch.no_grad():
        return (model.eval()(latents, steps, text) - per_frame_reference(unet2d, latents, steps, text)).abs().max()


@pytest.mark.parametrize("streams", ["serial", "parallel"])
@pytest.mark.parametrize("attention", ATTENTION_VARIANTS)
def test_video_unet_equals_the_2d_unet_on_every_frame(attention: str, streams: str, unet2d_dir: Path,
                                                      unet2d: UNet2DConditionModel) -> None:
    """At initialisation, for every attention variant and stream layout: video U-Net(T frames) == 2D U-Net(each
    frame)."""
    model = video_unet_from_2d(unet2d_dir, UNetConfig(attention=attention, window=(2, 2, 2), streams=streams))
    assert model.config.block_channels == (32, 64) and model.config.attention_head_dim == 16
    assert model.config.attention_levels == (True, False)
    assert max_difference(model, unet2d) <= 1e-5


def test_conv_projections_map_too() -> None:
    """Stable Diffusion 1.x style transformers (1x1 convolution ``proj_in``/``proj_out``) map as linear ones."""
    unet2d = tiny_2d(seed=1, use_linear_projection=False)
    model = video_unet_from_2d(unet2d, UNetConfig(attention="swap", window=(2, 2, 2)))
    assert max_difference(model, unet2d) <= 1e-5


def test_every_2d_tensor_is_used_and_only_video_layers_are_left(unet2d: UNet2DConditionModel) -> None:
    model = VideoUNet(unet_config_from_2d(dict(unet2d.config), UNetConfig(attention="swap")))
    report = load_2d_weights(model, unet2d)
    state2d, state = unet2d.state_dict(), model.state_dict()
    assert set(report.copied) == set(state2d)
    assert len(set(report.copied.values())) == len(state2d)
    assert set(report.copied.values()) | set(report.video_only) == set(state)
    assert report.video_only and all(VIDEO_ONLY.search(k) for k in report.video_only)
    for key2d, key in report.copied.items():
        assert torch.equal(state[key].reshape(state2d[key2d].shape), state2d[key2d]), key
    # every temporal conv, temporal transformer and fusion layer was reset to an identity
    kinds = {type(model.get_submodule(name)).__name__ for name in report.reset_layers}
    assert kinds == {"TemporalConv", "TemporalTransformer", "SwapWindowCrossAttention"}


@pytest.mark.parametrize("key", ["down.0.resnets.0.time_proj.weight", "up.0.resnets.1.skip.bias",
                                 "down.0.transformers.0.spatial.text_attn.to_k.weight",
                                 "up.1.transformers.0.spatial.ff.proj_in.bias", "up.0.resample.conv.weight",
                                 "mid.transformers.0.spatial.norm_ff.weight", "time_embed.2.bias"])
def test_the_equivalence_check_sees_one_wrong_tensor(key: str, unet2d: UNet2DConditionModel) -> None:
    """The equivalence test above would fail if the mapping left any one of these tensors un-copied."""
    model = video_unet_from_2d(unet2d, UNetConfig(attention="swap", window=(2, 2, 2)))
    with torch.no_grad():
        param = model.get_parameter(key)
        param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(3)))
    assert max_difference(model, unet2d) > 1e-3


def test_the_equivalence_needs_the_video_layers_reset(unet2d: UNet2DConditionModel) -> None:
    model = video_unet_from_2d(unet2d, UNetConfig(attention="swap", window=(2, 2, 2)))
    with torch.no_grad():
        model.down[0].resnets[0].temporal.net[-1].weight.fill_(0.05)
    assert max_difference(model, unet2d) > 1e-3
    pretrained.reset_video_layers(model)
    assert max_difference(model, unet2d) <= 1e-5


def test_a_2d_tensor_without_a_place_is_an_error(unet2d: UNet2DConditionModel,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    renames = tuple(r for r in pretrained._RENAMES if "time_emb_proj" not in r[0])
    monkeypatch.setattr(pretrained, "_RENAMES", renames)
    model = VideoUNet(unet_config_from_2d(dict(unet2d.config)))
    with pytest.raises(PretrainedMappingError) as error:
        load_2d_weights(model, unet2d)
    assert "down_blocks.0.resnets.0.time_emb_proj.weight has no place" in str(error.value)
    assert "get no 2D weight: " in str(error.value) and "down.0.resnets.0.time_proj.weight" in str(error.value)


def test_a_video_model_of_another_layout_is_refused(unet2d: UNet2DConditionModel) -> None:
    with pytest.raises(PretrainedMappingError, match="layout"):
        load_2d_weights(VideoUNet(UNetConfig.tiny(attention_head_dim=8)), unet2d)


@pytest.mark.parametrize(("change", "message"), [
    ({"class_embed_type": "timestep"}, "class_embed_type='timestep'"),
    ({"attention_head_dim": 8}, "head widths (channels // attention_head_dim) differ between levels"),
    ({"down_block_types": ["AttnDownBlock2D", "DownBlock2D"]}, "block types ['AttnDownBlock2D']"),
    ({"up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"]}, "do not mirror"),
    ({"transformer_layers_per_block": 2}, "transformer_layers_per_block=2"),
    ({"resnet_time_scale_shift": "scale_shift"}, "resnet_time_scale_shift='scale_shift'"),
    ({"_class_name": "UNet3DConditionModel"}, "names 'UNet3DConditionModel'"),
])
def test_a_2d_config_it_cannot_map_is_refused_with_the_reason(change: dict, message: str) -> None:
    config = {"_class_name": "UNet2DConditionModel", **TINY_2D, **change}
    with pytest.raises(PretrainedMappingError) as error:
        unet_config_from_2d(config)
    assert message in str(error.value)


def test_model_unet_geometry_that_disagrees_is_refused_and_video_fields_are_kept() -> None:
    config = {"_class_name": "UNet2DConditionModel", **TINY_2D}
    with pytest.raises(PretrainedMappingError, match=r"model\.unet\.block_channels=\[16, 32\]"):
        unet_config_from_2d(config, UNetConfig.from_dict({"block_channels": [16, 32], "norm_num_groups": 8,
                                                          "attention_head_dim": 16}))
    video = UNetConfig.from_dict({"attention": "temporal_query", "window": [1, 2, 2], "temporal_conv_layers": 1,
                                  "block_channels": [32, 64], "norm_num_groups": 8, "attention_head_dim": 16})
    resolved = unet_config_from_2d(config, video)
    assert (resolved.attention, resolved.window, resolved.temporal_conv_layers) == ("temporal_query", (1, 2, 2), 1)
    assert resolved.cross_attention_dim == 32 and resolved.layers_per_block == 1


def test_the_path_is_local_only(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        read_2d_config(tmp_path / "stabilityai" / "stable-diffusion-2-1-base")
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        pretrained.load_unet2d("stabilityai/stable-diffusion-2-1-base")


def test_train_sd21_yaml_maps_stable_diffusion_2_1_base() -> None:
    cfg = load_config(ROOT / "configs" / "train_sd21.yaml")
    assert cfg.model.init_from.endswith("unet")
    unet = unet_config_from_2d(SD21_BASE, cfg.model.unet)
    assert unet.block_channels == (320, 640, 1280, 1280) and unet.layers_per_block == 2
    assert unet.attention_head_dim == 64 and unet.cross_attention_dim == 1024
    assert unet.attention_levels == (True, True, True, False)
    factor = 8 * unet.downsample_factor  # the VAE's 8x, then the U-Net's levels
    assert cfg.data.width % factor == 0 and cfg.data.height % factor == 0


def test_the_trainer_starts_from_init_from_and_a_resume_keeps_its_weights(
        unet2d_dir: Path, unet2d: UNet2DConditionModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``model.init_from`` in a training config: the layout comes from the 2D model (and is saved with the
    checkpoint, so sampling needs no 2D model), the weights are the 2D ones, the EMA starts from them, and a
    resumed run keeps its trained weights instead of loading the 2D ones again."""
    from demo.tiny_training import make_tiny_pretrained
    from tests.train_corpus import write_corpus
    from training import trainer as trainer_module
    from training.checkpoint import list_checkpoints, load_checkpoint_config
    from training.config import config_from_dict
    from training.distributed import DistEnv
    from training.trainer import Trainer

    cpu = DistEnv(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
    write_corpus(tmp_path / "corpus", [9], shards=1)
    data = load_config(ROOT / "configs" / "train_tiny.yaml").to_dict()
    data["data"].update(corpora=[{"path": str(tmp_path / "corpus"), "weight": 1.0}], workers=0)
    data["model"].update(make_tiny_pretrained(tmp_path / "encoders"), init_from=str(unet2d_dir),
                         unet={"attention": "temporal_query", "window": [2, 2, 2]})
    data.update(output=str(tmp_path / "run"), steps=1, checkpoint_every=1)

    trainer = Trainer(config_from_dict(data), cpu)
    unet = trainer.cfg.model.unet
    assert (unet.block_channels, unet.attention_head_dim, unet.attention) == ((32, 64), 16, "temporal_query")
    state = trainer.model.state_dict()
    report = load_2d_weights(VideoUNet(unet), unet2d)
    for key2d, key in report.copied.items():
        assert torch.equal(state[key].reshape(unet2d.state_dict()[key2d].shape), unet2d.state_dict()[key2d]), key
    if trainer.ema is not None:
        assert all(torch.equal(trainer.ema.state[k], v.float()) for k, v in state.items())
    trainer.train()
    saved = load_checkpoint_config(list_checkpoints(tmp_path / "run")[-1])
    assert saved.model.unet == unet and saved.model.init_from == str(unet2d_dir)

    monkeypatch.setattr(trainer_module, "load_2d_weights", lambda *args: pytest.fail("a resume reloaded init_from"))
    resumed = Trainer(config_from_dict(data), cpu)
    assert resumed.step == 1
