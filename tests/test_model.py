"""The video U-Net (training.model): shapes, the swap attention's query roles, zero-init, padding, checkpointing."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from training.model import ATTENTION_VARIANTS, UNetConfig, VideoUNet
from training.model.attention import (
    GlobalSpatiotemporalAttention,
    SwapWindowCrossAttention,
    TemporalSelfAttention,
    WindowLayout,
)
from training.model.pretrained import reset_video_layers, video_unet_from_2d

CROSS_STREAM = (SwapWindowCrossAttention, GlobalSpatiotemporalAttention)


pytestmark = pytest.mark.usefixtures("one_thread")


def inputs(cfg: UNetConfig, b: int = 2, t: int = 3, h: int = 8, w: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, cfg.in_channels, t, h, w, generator=g), torch.randint(0, 1000, (b,), generator=g),
            torch.randn(b, 5, cfg.cross_attention_dim, generator=g))


def swap_layers(model: torch.nn.Module) -> list[SwapWindowCrossAttention]:
    return [m for m in model.modules() if isinstance(m, SwapWindowCrossAttention)]


def randomize_zero_params(model: torch.nn.Module, seed: int) -> None:
    """Make every zero-initialised parameter non-zero, as it would be after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def observed_query_stream(layer: SwapWindowCrossAttention, c: int) -> str:
    """Which stream really queries, from behaviour: a query token only changes its own output, a key/value
    token changes the output of every token of its window."""
    g = torch.Generator().manual_seed(1)
    spatial, temporal = torch.randn(2, 1, c, 2, 2, 2, generator=g)
    with torch.no_grad():
        base = layer(spatial, temporal)
        bumped = spatial.clone()
        bumped[:, :, 0, 0, 0] += torch.randn(c, generator=g)  # not a constant: LayerNorm would remove it
        changed = (layer(bumped, temporal) - base).abs().amax(dim=1) > 1e-6
    return "spatial" if changed.sum().item() == 1 else "temporal"


@pytest.mark.parametrize("attention", ATTENTION_VARIANTS)
@pytest.mark.parametrize("size", [(1, 4, 4), (3, 6, 10), (5, 8, 4)])
def test_each_sample_is_denoised_on_its_own(attention: str, size: tuple[int, int, int]) -> None:
    """Shape kept, and no leak across the batch: a sample's output is the same alone or beside another (window
    partitioning and padding, which reshape batch and windows together, must not mix them)."""
    # window (2, 4, 4) forces padding in t for odd T and in h/w at both levels for these sizes
    torch.manual_seed(0)
    cfg = UNetConfig.tiny(attention=attention, window=(2, 4, 4))
    model = VideoUNet(cfg)
    randomize_zero_params(model, seed=10)  # every path live, as after training
    t, h, w = size
    latents, steps, text = inputs(cfg, t=t, h=h, w=w)
    with torch.no_grad():
        out = model(latents, steps.float(), text)
        alone = model(latents[1:], steps[1:].float(), text[1:])
    assert out.shape == (2, cfg.out_channels, t, h, w)
    torch.testing.assert_close(out[1:], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("attention", ATTENTION_VARIANTS)
def test_output_follows_the_text_and_the_timestep(attention: str) -> None:
    torch.manual_seed(0)
    model = VideoUNet(UNetConfig.tiny(attention=attention))
    latents, steps, text = inputs(model.config, b=1)
    with torch.no_grad():
        base = model(latents, steps, text)
        other_text = model(latents, steps, torch.roll(text, 1, dims=1) + 0.5)
        other_step = model(latents, steps + 400, text)
        again = model(latents, steps, text)
    assert torch.equal(base, again), "deterministic in eval"
    assert (other_text - base).abs().mean() > 1e-4, "the text conditioning reaches the output"
    assert (other_step - base).abs().mean() > 1e-4, "the timestep reaches the output"


@pytest.mark.parametrize("attention", ATTENTION_VARIANTS)
def test_frames_are_independent_at_init_and_mixed_once_temporal_layers_learn(attention: str) -> None:
    """Temporal and cross-stream layers start at zero: a new model is an image model applied frame by frame
    (permuting frames permutes the output). Once they are trained, a frame's output depends on the others,
    and on frame order (frame-index embeddings)."""
    torch.manual_seed(0)
    model = VideoUNet(UNetConfig.tiny(attention=attention, window=(2, 4, 4)))
    latents, steps, text = inputs(model.config, b=1, t=4)
    order = torch.tensor([2, 0, 3, 1])
    bumped = latents.clone()
    bumped[:, :, 0] += torch.randn(bumped[:, :, 0].shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        base = model(latents, steps, text)
        torch.testing.assert_close(model(latents[:, :, order], steps, text), base[:, :, order], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model(bumped, steps, text)[:, :, 1:], base[:, :, 1:], atol=1e-5, rtol=1e-4)
        randomize_zero_params(model, seed=11)
        base = model(latents, steps, text)
        assert (model(bumped, steps, text)[:, :, 1:] - base[:, :, 1:]).abs().amax() > 1e-4, "frames now interact"
        permuted = model(latents[:, :, order], steps, text)
    assert (permuted - base[:, :, order]).abs().amax() > 1e-4, "and their order matters"


def test_attention_variants_differ_once_trained() -> None:
    """The same weights (shared keys) give the same output at init and different outputs once the cross-stream
    layers are trained: the variants are different models, not names."""
    torch.manual_seed(0)
    reference = VideoUNet(UNetConfig.tiny(attention="swap", window=(2, 4, 4), layers_per_block=2))
    randomize_zero_params(reference, seed=12)
    x = inputs(reference.config, b=1, t=4)
    outputs = {}
    for attention in ("swap", "spatial_query", "temporal_query"):
        model = VideoUNet(UNetConfig.tiny(attention=attention, window=(2, 4, 4), layers_per_block=2))
        model.load_state_dict(reference.state_dict())
        with torch.no_grad():
            outputs[attention] = model(*x)
    assert (outputs["swap"] - outputs["spatial_query"]).abs().amax() > 1e-4
    assert (outputs["swap"] - outputs["temporal_query"]).abs().amax() > 1e-4
    assert (outputs["spatial_query"] - outputs["temporal_query"]).abs().amax() > 1e-4


def first_step_fusion_gradients(attention: str, streams: str, reference: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The gradients of the fusion layers' parameters for one loss on one batch, from ``reference``'s weights."""
    model = VideoUNet(UNetConfig.tiny(attention=attention, streams=streams, window=(2, 4, 4)))
    model.load_state_dict(reference)
    model(*inputs(model.config, b=1, t=4)).square().mean().backward()
    return [p.grad.clone() for name, p in model.named_parameters() if ".fusion." in name]


@pytest.mark.parametrize("streams", ["serial", "parallel"])
def test_the_query_role_matters_from_the_first_step_only_with_parallel_streams(streams: str) -> None:
    """From the same initial weights (a fresh model: temporal and fusion layers at identity), the two one-way
    arms give the same output. Serial streams are then equal (the temporal stream is the spatial stream plus a
    zero update), so the arms take the same first step too: they can only drift apart once the temporal
    transformer has learned. Parallel streams differ from step 0, so the arms' first steps differ already."""
    torch.manual_seed(0)
    reference = VideoUNet(UNetConfig.tiny(attention="spatial_query", streams=streams, window=(2, 4, 4))).state_dict()
    spatial = first_step_fusion_gradients("spatial_query", streams, reference)
    temporal = first_step_fusion_gradients("temporal_query", streams, reference)
    difference = max((a - b).abs().max().item() for a, b in zip(spatial, temporal, strict=True))
    assert max(g.abs().max().item() for g in spatial) > 1e-6, "the fusion layers do learn at step 0"
    if streams == "serial":
        assert difference < 1e-7
    else:
        assert difference > 1e-4


@pytest.mark.parametrize("swap_every", ["layer", "block"])
def test_swap_alternates_query_role(swap_every: str) -> None:
    cfg = UNetConfig.tiny(attention="swap", swap_every=swap_every, layers_per_block=2)
    model = VideoUNet(cfg)
    randomize_zero_params(model, seed=3)
    executed: list[tuple[str, str]] = []  # (block name, query stream) in forward order
    names = {m: n for n, m in model.named_modules()}
    for layer in swap_layers(model):
        layer.register_forward_pre_hook(lambda m, _: executed.append((names[m].split(".transformers")[0],
                                                                      m.query_stream)))
    model(*inputs(cfg))
    assert len(executed) == len(swap_layers(model)) >= 4
    roles = [r for _, r in executed]
    if swap_every == "layer":
        assert roles == ["spatial", "temporal"] * (len(roles) // 2) + ["spatial"] * (len(roles) % 2)
    else:
        blocks = list(dict.fromkeys(b for b, _ in executed))
        assert len(blocks) >= 3
        for i, block in enumerate(blocks):
            assert {r for b, r in executed if b == block} == {("spatial", "temporal")[i % 2]}
    channels = {layer: layer.norm_q.normalized_shape[0] for layer in swap_layers(model)}
    assert [observed_query_stream(layer, c) for layer, c in channels.items()] == \
        [layer.query_stream for layer in channels]


@pytest.mark.parametrize(("attention", "stream"), [("spatial_query", "spatial"), ("temporal_query", "temporal")])
def test_one_direction_variants_keep_role(attention: str, stream: str) -> None:
    model = VideoUNet(UNetConfig.tiny(attention=attention, layers_per_block=2))
    randomize_zero_params(model, seed=4)
    layers = swap_layers(model)
    assert len(layers) >= 4
    assert {layer.query_stream for layer in layers} == {stream}
    assert {observed_query_stream(layer, layer.norm_q.normalized_shape[0]) for layer in layers} == {stream}


def test_factorized_has_no_cross_stream_modules() -> None:
    model = VideoUNet(UNetConfig.tiny(attention="factorized"))
    assert not [m for m in model.modules() if isinstance(m, CROSS_STREAM)]
    assert not [k for k in model.state_dict() if ".fusion." in k]
    full3d = VideoUNet(UNetConfig.tiny(attention="full3d"))
    assert not swap_layers(full3d) and any(isinstance(m, GlobalSpatiotemporalAttention) for m in full3d.modules())


@pytest.mark.parametrize("attention", ["swap", "spatial_query", "temporal_query", "full3d"])
def test_new_attention_leaves_pretrained_factorized_model_unchanged(attention: str) -> None:
    torch.manual_seed(0)
    factorized = VideoUNet(UNetConfig.tiny(attention="factorized"))
    randomize_zero_params(factorized, seed=5)  # a "pretrained" model: temporal layers no longer zero
    torch.manual_seed(1)
    model = VideoUNet(UNetConfig.tiny(attention=attention))
    result = model.load_state_dict(factorized.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(".fusion." in k for k in result.missing_keys)
    x = inputs(factorized.config, t=3, h=6, w=10)
    with torch.no_grad():
        expected = factorized(*x)
        assert torch.allclose(model(*x), expected, atol=1e-6)
        randomize_zero_params(model, seed=6)  # now the fusion's output projection is trained: output moves
        assert not torch.allclose(model(*x), expected, atol=1e-4)


@pytest.mark.parametrize("query_stream", ["spatial", "temporal"])
def test_padded_window_attention_equals_per_window_reference(query_stream: str) -> None:
    c, window, (t, h, w) = 16, (2, 4, 4), (3, 5, 6)  # padded on all three axes
    layer = SwapWindowCrossAttention(c, head_dim=8, window=window, query_stream=query_stream)
    randomize_zero_params(layer, seed=7)
    spatial, temporal = torch.randn(2, 1, c, t, h, w, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        out = layer(spatial, temporal)
        query, kv = (spatial, temporal) if query_stream == "spatial" else (temporal, spatial)
        for t0 in range(0, t, window[0]):
            for h0 in range(0, h, window[1]):
                for w0 in range(0, w, window[2]):
                    cut = (slice(None), slice(None), slice(t0, t0 + window[0]), slice(h0, h0 + window[1]),
                           slice(w0, w0 + window[2]))
                    q = layer.norm_q(query[cut].flatten(2).transpose(1, 2))  # only the real tokens
                    k = layer.norm_kv(kv[cut].flatten(2).transpose(1, 2))
                    expected = layer.attn(q, context=k).transpose(1, 2).reshape(query[cut].shape)
                    torch.testing.assert_close(out[cut], expected, atol=1e-5, rtol=1e-5)


def test_window_partition_round_trip() -> None:
    x = torch.randn(2, 3, 5, 7, 4)
    layout = WindowLayout.fit((3, 5, 7), (2, 4, 4))
    windows = layout.partition(x)
    assert windows.shape == (2 * 2 * 2 * 2, 2 * 4 * 4, 4)
    assert torch.equal(layout.reverse(windows, 2), x)
    assert layout.key_mask(2, x.device).sum() == 2 * 3 * 5 * 7
    assert WindowLayout.fit((4, 8, 8), (2, 4, 4)).key_mask(2, x.device) is None  # fast path: no mask
    assert WindowLayout.fit((1, 2, 8), (2, 4, 4)).window == (1, 2, 4)


def test_gradient_checkpointing_gives_same_gradients() -> None:
    torch.manual_seed(0)
    model = VideoUNet(UNetConfig.tiny(attention="swap"))
    randomize_zero_params(model, seed=9)
    x = inputs(model.config, t=2, h=4, w=4)

    def grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        loss = model(*x).square().mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss_plain, grads_plain = grads()
    model.set_gradient_checkpointing(True)
    assert model.config.gradient_checkpointing
    loss_ckpt, grads_ckpt = grads()
    torch.testing.assert_close(loss_ckpt, loss_plain)
    for a, b in zip(grads_ckpt, grads_plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_tiny_model_overfits_one_batch() -> None:
    torch.manual_seed(0)
    model = VideoUNet(UNetConfig.tiny(attention="swap"))
    latents, steps, text = inputs(model.config, b=1, t=2, h=8, w=8)
    target = torch.randn_like(latents, generator=torch.Generator().manual_seed(2))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(50):
        loss = torch.nn.functional.mse_loss(model(latents, steps, text), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0], losses[::10]


def test_config_json_round_trip_and_validation() -> None:
    cfg = UNetConfig.tiny(attention="temporal_query", window=(1, 2, 4), attention_levels=(True, True),
                          swap_every="block", extra={"source": "test"})
    again = UNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert VideoUNet(again).state_dict().keys() == VideoUNet(cfg).state_dict().keys()
    with pytest.raises(ValueError, match="attention: .*'swap', 'spatial_query', 'temporal_query', 'factorized', "
                                         "'full3d' or 'factorized_matched', not 'swapped'"):
        UNetConfig.tiny(attention="swapped")
    with pytest.raises(ValueError, match="windw: unknown config key; .*window"):
        UNetConfig.from_dict({**cfg.to_dict(), "windw": [2, 2, 2]})
    with pytest.raises(ValueError, match="norm_num_groups"):
        UNetConfig.tiny(block_channels=(32, 60))
    with pytest.raises(ValueError, match="swap_every"):
        UNetConfig.tiny(swap_every="frame")


def test_bad_inputs_say_what_is_wrong() -> None:
    model = VideoUNet(UNetConfig.tiny())
    latents, steps, text = inputs(model.config, h=6, w=6)
    with pytest.raises(ValueError, match="divisible by 2"):
        model(latents[..., :5], steps, text)
    with pytest.raises(ValueError, match="cross_attention_dim"):
        model(latents, steps, text[..., :8])
    assert model(latents, torch.tensor(10), text).shape == latents.shape  # a scalar timestep is broadcast


def test_every_variant_starts_from_the_same_shared_weights() -> None:
    """Fair arms: with one seed, every tensor two variants share (name and shape) starts equal, whatever
    variant-specific (fusion) layers each builds; the fusion layers still follow the seed, and the global RNG
    is left where it would be without them."""
    states, after = {}, {}
    for attention in ATTENTION_VARIANTS:
        torch.manual_seed(0)
        states[attention] = VideoUNet(UNetConfig.tiny(attention=attention, layers_per_block=2)).state_dict()
        after[attention] = torch.get_rng_state()
    for i, a in enumerate(ATTENTION_VARIANTS):
        for b in ATTENTION_VARIANTS[i + 1:]:
            shared = [k for k in states[a] if k in states[b] and states[a][k].shape == states[b][k].shape]
            assert shared, (a, b)
            differ = [k for k in shared if not torch.equal(states[a][k], states[b][k])]
            assert not differ, f"{a} vs {b}: {len(differ)} of {len(shared)} shared tensors differ, e.g. {differ[:3]}"
            assert torch.equal(after[a], after[b]), (a, b)
    torch.manual_seed(1)
    reseeded = VideoUNet(UNetConfig.tiny(attention="swap", layers_per_block=2)).state_dict()
    fusion = [k for k in reseeded if ".fusion." in k and reseeded[k].unique().numel() > 1]  # drawn at random
    assert fusion and all(not torch.equal(reseeded[k], states["swap"][k]) for k in fusion)
    torch.manual_seed(0)
    again = VideoUNet(UNetConfig.tiny(attention="swap", layers_per_block=2)).state_dict()
    assert all(torch.equal(again[k], states["swap"][k]) for k in again)


@pytest.mark.parametrize("fps_conditioning", [False, True])
@pytest.mark.parametrize("attention", ATTENTION_VARIANTS)
def test_a_single_frame_bypasses_the_temporal_layers(attention: str, fps_conditioning: bool) -> None:
    """T = 1 (an image in joint image-video training) is exactly the image model: with every temporal, fusion and
    fps layer trained (non-zero, not identities), a 1-frame input gives what the model with those layers zeroed
    gives per frame on a longer clip; T > 1 still uses them."""
    torch.manual_seed(0)
    model = VideoUNet(UNetConfig.tiny(attention=attention, window=(2, 4, 4), fps_conditioning=fps_conditioning))
    randomize_zero_params(model, seed=13)
    image_model = copy.deepcopy(model)
    assert reset_video_layers(image_model)  # temporal convs and transformers, fusion, fps embedding -> identity
    latents, steps, text = inputs(model.config, t=3)
    fps = torch.tensor([8.0, 24.0])
    with torch.no_grad():
        reference = image_model(latents, steps, text, fps=fps)  # zeroed temporal layers: per frame
        for frame in range(3):
            single = model(latents[:, :, frame:frame + 1], steps, text, fps=fps)
            torch.testing.assert_close(single, reference[:, :, frame:frame + 1], atol=1e-5, rtol=1e-4)
        video = model(latents, steps, text, fps=fps)
    assert (video - reference).abs().amax() > 1e-3, "with T > 1 the temporal layers still act"


def test_a_single_frame_of_a_trained_video_model_is_the_pretrained_image_model() -> None:
    """Initialised from a 2D U-Net and then "trained" (every video-only layer non-zero), the video U-Net on one
    frame still equals the 2D U-Net: joint training with images trains exactly the inherited image model."""
    from tests.test_pretrained_init import per_frame_reference, tiny_2d

    unet2d = tiny_2d().eval()
    for attention in ATTENTION_VARIANTS:
        model = video_unet_from_2d(unet2d, UNetConfig(attention=attention, window=(2, 2, 2), fps_conditioning=True))
        randomize_zero_params(model, seed=14)
        g = torch.Generator().manual_seed(0)
        latents, steps, text = torch.randn(2, 4, 1, 8, 8, generator=g), torch.tensor([17, 803]), torch.randn(
            2, 5, 32, generator=g)
        with torch.no_grad():
            difference = (model.eval()(latents, steps, text, fps=12.0)
                          - per_frame_reference(unet2d, latents, steps, text)).abs().max()
        assert difference <= 1e-5, (attention, difference)


def test_fps_conditioning_is_zero_at_init_and_reaches_the_output_once_trained() -> None:
    torch.manual_seed(0)
    model = VideoUNet(UNetConfig.tiny(fps_conditioning=True))
    latents, steps, text = inputs(model.config, t=3)
    with torch.no_grad():
        base = model(latents, steps, text, fps=8.0)
        assert torch.equal(model(latents, steps, text, fps=torch.tensor([24.0, 2.0])), base), "zero-init: no effect"
        randomize_zero_params(model.fps_embed, seed=15)
        trained = model(latents, steps, text, fps=8.0)
        assert (model(latents, steps, text, fps=24.0) - trained).abs().amax() > 1e-4, "fps now reaches the output"
        assert torch.equal(model(latents[:, :, :1], steps, text, fps=24.0),
                           model(latents[:, :, :1], steps, text, fps=8.0)), "a single frame ignores fps"
    with pytest.raises(ValueError, match="pass fps"):
        model(latents, steps, text)
    # an optional layer from its own RNG stream: the shared weights are those of the model without it
    torch.manual_seed(0)
    plain = VideoUNet(UNetConfig.tiny()).state_dict()
    torch.manual_seed(0)
    with_fps = VideoUNet(UNetConfig.tiny(fps_conditioning=True)).state_dict()
    assert all(torch.equal(plain[k], with_fps[k]) for k in plain)
    assert {k for k in with_fps if k not in plain} == {k for k in with_fps if k.startswith("fps_embed.")}


def parameter_count(cfg: UNetConfig) -> int:
    with torch.device("meta"):  # shapes only: the default (SD-sized) U-Net costs no memory
        return sum(p.numel() for p in VideoUNet(cfg).parameters())


@pytest.mark.parametrize("make", [UNetConfig.tiny, UNetConfig], ids=["tiny", "default"])
def test_factorized_matched_has_the_windowed_arms_parameters_without_cross_stream_attention(make) -> None:
    counts = {a: parameter_count(make(attention=a)) for a in ("factorized", "factorized_matched", "swap")}
    assert abs(counts["factorized_matched"] - counts["swap"]) <= 0.01 * counts["swap"], counts
    assert counts["factorized_matched"] > counts["factorized"]
    model = VideoUNet(UNetConfig.tiny(attention="factorized_matched"))
    assert not [m for m in model.modules() if isinstance(m, CROSS_STREAM)]
    layers = [m for m in model.modules() if isinstance(m, TemporalSelfAttention)]
    assert layers
    randomize_zero_params(layers[0], seed=16)
    spatial, temporal = torch.randn(2, 1, 32, 3, 2, 2, generator=torch.Generator().manual_seed(17))
    with torch.no_grad():  # it never looks at the spatial stream, and it mixes frames
        out = layers[0](spatial, temporal)
        assert torch.equal(layers[0](spatial + 1.0, temporal), out)
        bumped = temporal.clone()
        bumped[:, :, 0] += 1.0 + torch.randn(bumped[:, :, 0].shape)
        assert (layers[0](spatial, bumped)[:, :, 1:] - out[:, :, 1:]).abs().amax() > 1e-4
