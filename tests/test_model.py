"""The generator and discriminator: shapes, known answers of the StyleGAN2 ops, sizes of the presets."""
import math
import subprocess
import sys

import pytest
import torch

from gan3d.config import load_config
from gan3d.nn import Patch, build_discriminator, build_generator, count_parameters
from gan3d.nn.layers import minibatch_std, modulated_conv2d
from gan3d.nn.resample import downsample2d, fir_filter, upsample2d
from conftest import ROOT, SMOKE


def test_smoke_generator_renders_image_and_patch(smoke_cfg):
    torch.manual_seed(0)
    G = build_generator(smoke_cfg).eval()
    z, angles = torch.randn(2, 64), torch.tensor([[1.57, 1.3, 0.0]] * 2)
    with torch.no_grad():
        img = G(z, None, angles)
        patch = G(z, None, angles, Patch(torch.full((2, 2), 0.5), torch.full((2, 2), 0.25)), resolution=16)
    assert img.shape == (2, 3, 32, 32) and patch.shape == (2, 3, 16, 16)
    assert torch.isfinite(img).all() and img.std() > 0  # raw linear colour, as the seed (no squashing)
    # a patch of scale 1 at offset 0 renders exactly the full image's rays
    with torch.no_grad():
        whole = G(z, None, angles, Patch(torch.ones(2, 2), torch.zeros(2, 2)), resolution=32)
    assert torch.allclose(whole, img, atol=1e-5)


def test_chunked_rendering_matches_one_pass(smoke_cfg):
    from gan3d import config as config_mod
    torch.manual_seed(0)
    G1 = build_generator(smoke_cfg).eval()
    G2 = build_generator(config_mod.replace(smoke_cfg, ["model.generator.render.max_batch_res=7"])).eval()
    G2.load_state_dict(G1.state_dict())
    z, angles = torch.randn(1, 64), torch.tensor([[1.2, 1.4, 0.0]])
    with torch.no_grad():
        assert torch.allclose(G1(z, None, angles), G2(z, None, angles), atol=1e-5)


def test_discriminator_scores_patches_and_depends_on_scale(smoke_cfg):
    torch.manual_seed(0)
    D = build_discriminator(smoke_cfg)
    assert D.num_extra == 1  # log2(32 / 16)
    x = torch.randn(4, 3, 16, 16)
    a = D(x, torch.tensor([[1.0, 0.0, 0.0]] * 4))
    b = D(x, torch.tensor([[0.5, 0.2, 0.3]] * 4))
    assert a.shape == (4, 1) and not torch.allclose(a, b)


def test_upfirdn_known_answers():
    f = fir_filter()
    x = torch.ones(1, 2, 8, 8)
    up = upsample2d(x, f)
    assert up.shape == (1, 2, 16, 16) and torch.allclose(up[..., 2:-2, 2:-2], torch.ones(1, 2, 12, 12))
    down = downsample2d(x, f)
    assert down.shape == (1, 2, 4, 4) and torch.allclose(down[..., 1:-1, 1:-1], torch.ones(1, 2, 2, 2))


def test_modulated_conv_equals_per_sample_conv():
    torch.manual_seed(0)
    x, w, s = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    out = modulated_conv2d(x, w, s, fir_filter(), demodulate=True, padding=1)
    for i in range(3):
        wi = w * s[i][None, :, None, None]
        wi = wi / wi.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
        ref = torch.nn.functional.conv2d(x[i:i + 1], wi, padding=1)
        assert torch.allclose(out[i:i + 1], ref, atol=1e-5)


@pytest.mark.parametrize("up", [1, 2])
def test_batched_modulated_conv_equals_the_grouped_reference(up, monkeypatch):
    """The fast batched path against per-sample weights in one grouped conv, upsampling included."""
    from gan3d.nn import layers
    torch.manual_seed(0)
    x, w, s, noise = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(3, 4), torch.randn(1, 1, 6 * up, 6 * up)
    fast = modulated_conv2d(x, w, s, fir_filter(), True, 1, up, noise)
    monkeypatch.setattr(layers, "BATCHED_MODCONV", False)
    ref = modulated_conv2d(x, w, s, fir_filter(), True, 1, up, noise)
    assert fast.shape == (3, 5, 6 * up, 6 * up) and torch.allclose(fast, ref, atol=1e-5)


def test_minibatch_std_groups_are_strided():
    x = torch.zeros(4, 1, 2, 2)
    x[1] = 2.0  # group size 2 -> groups {0, 2} and {1, 3}
    y = minibatch_std(x, 2)
    assert torch.allclose(y[[0, 2], 1], torch.zeros(2, 2, 2), atol=1e-3)  # sqrt(var + 1e-8)
    assert torch.allclose(y[[1, 3], 1], torch.ones(2, 2, 2), atol=1e-3)


def test_ffhq512_models_build_and_describe():
    cfg = load_config(ROOT / "experiments" / "ffhq512.yaml")
    G, D = build_generator(cfg), build_discriminator(cfg)
    assert D.num_extra == 3 and G.synthesis.resolutions[-1] == 512
    # the reference's counts (REFERENCE.md); D without the reference's 7,936 unused fromRGB parameters
    assert count_parameters(G) == 28_983_507 and count_parameters(D) == 27_490_816 - 7_936
    out = subprocess.run([sys.executable, "-m", "gan3d.cli", "describe", str(SMOKE), "training.gamma=0.2"],
                         capture_output=True, text=True, check=True).stdout
    assert "gamma: 0.2" in out and "generator:" in out and "discriminator:" in out and "parameters" in out


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "gan3d.cli", "--help"], capture_output=True, text=True).stdout
    for cmd in ("train", "describe", "dataset", "sweep", "eval", "render", "report", "bench", "submit", "status", "logs"):
        assert cmd in out


def test_background_and_white_back_show_through_empty_space(smoke_cfg):
    from gan3d import config as config_mod
    torch.manual_seed(0)
    z, angles = torch.randn(1, 64), torch.tensor([[1.57, 1.3, 0.0]])
    for overrides, expect_white in ((["model.generator.render.white_back=true"], True),
                                    (["model.generator.bg.enabled=true", "model.generator.bg.hidden_dim=16"], False)):
        G = build_generator(config_mod.replace(smoke_cfg, overrides)).eval()
        with torch.no_grad():
            G.decoder.out.bias[3] = -80.0  # no density anywhere: only the background remains
            img = G(z, None, angles)
        if expect_white:
            assert torch.allclose(img, torch.ones_like(img), atol=1e-4)
        else:  # nothing absorbs: every pixel is the background model's colour along its ray
            from gan3d.render import cameras, rays
            with torch.no_grad():
                cam = G.camera
                d = rays.ray_directions(32, cam.fov, batch=1)
                origins, dirs = rays.world_rays(cameras.cam2world_matrix(angles, cam.radius), d)
                bg = G.background(origins, dirs, G.map(z)[:, -1], cam.ray_end).transpose(1, 2).reshape(1, 3, 32, 32)
            assert bg.std() > 0 and torch.allclose(img, bg, atol=1e-5)
            G.background = None  # without its background, empty space integrates to colour 0 (raw, as the seed)
            with torch.no_grad():
                assert torch.allclose(G(z, None, angles), torch.zeros_like(img), atol=1e-4)


def test_open_back_lets_white_back_show_through_thin_fog_that_the_reference_integration_makes_opaque(smoke_cfg):
    from gan3d import config as config_mod
    z, angles = torch.randn(1, 64, generator=torch.Generator().manual_seed(0)), torch.tensor([[1.57, 1.3, 0.0]])
    images = {}
    for open_back in (False, True):
        G = build_generator(config_mod.replace(smoke_cfg, ["model.generator.render.white_back=true",
                                                           f"model.generator.render.open_back={open_back}"])).eval()
        with torch.no_grad():  # a uniform thin fog of colour -1 (black): softplus(-3) = 0.049 per unit depth
            G.decoder.out.weight.zero_()
            G.decoder.out.bias.copy_(torch.tensor([-1.0, -1.0, -1.0, -3.0]) / G.decoder.out.bias_gain)
            images[open_back] = G(z, None, angles)
    assert torch.allclose(images[False], -torch.ones_like(images[False]), atol=1e-4)  # the last sample absorbs all
    # open: the fog between the first and last samples absorbs what it would, and white shows through the rest
    cam = smoke_cfg.dataset.camera
    absorbed = 1 - math.exp(-torch.nn.functional.softplus(torch.tensor(-3.0)).item() * (cam.ray_end - cam.ray_start))
    assert torch.allclose(images[True], torch.full_like(images[True], 1 - 2 * absorbed), atol=6e-3)


@pytest.mark.parametrize("op", ["down", "down_odd", "up", "blur"])
def test_fir_filters_match_pytorch_convs_to_second_order_with_one_conv_per_order(op):
    """filter_conv's own transpose as its gradient: values and R1-style second-order gradients equal
    PyTorch's depthwise convs, while the number of convolutions stays independent of the channel count
    (PyTorch's generic double backward runs one conv per channel: 65% of an H200 ffhq512 step)."""
    import torch.nn.functional as F
    from gan3d.nn.resample import gaussian_blur

    f = fir_filter().double()
    H = 9 if op == "down_odd" else 8

    def ours(x):
        if op.startswith("down"):
            return downsample2d(x, f)
        return upsample2d(x, f) if op == "up" else gaussian_blur(x, 1.0)

    def plain(x):  # the same sums with PyTorch's grouped convs
        C = x.shape[1]
        if op.startswith("down"):
            return F.conv2d(F.pad(x, [1, 1, 1, 1]), f.flip([0, 1])[None, None].repeat(C, 1, 1, 1), stride=2, groups=C)
        if op == "up":
            y = F.conv_transpose2d(x, (4 * f)[None, None].repeat(C, 1, 1, 1), stride=2, groups=C)
            return y[:, :, 1:-1, 1:-1]
        t = torch.arange(-3, 4, dtype=x.dtype)
        k = torch.exp2(-t.square())
        k = k / k.sum()
        x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(C, 1, 1, 1), padding=(0, 3), groups=C)
        return F.conv2d(x, k.view(1, 1, -1, 1).repeat(C, 1, 1, 1), padding=(3, 0), groups=C)

    def r1_grads(fn, C):  # d/d(params) of ||d out / d x||^2, through fn twice
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, C, H, H, generator=g, dtype=torch.float64, requires_grad=True)
        p = torch.randn(1, C, 1, 1, generator=g, dtype=torch.float64, requires_grad=True)
        out = (fn(x * p).square() * p).sum()
        (gx,) = torch.autograd.grad(out, x, create_graph=True)
        (gp,) = torch.autograd.grad(gx.square().sum(), p)
        return out, gp

    for a, b in zip(r1_grads(ours, 5), r1_grads(plain, 5)):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)

    def convs(fn, C):
        with torch.profiler.profile() as prof:
            r1_grads(fn, C)
        return sum(e.count for e in prof.key_averages() if e.key == "aten::convolution")

    assert convs(ours, 16) == convs(ours, 2) <= 8
    assert convs(plain, 16) > convs(plain, 2)  # what the custom gradient avoids


def test_bf16_training_precision_keeps_renders_and_losses_in_fp32(smoke_cfg):
    from gan3d.config import replace
    from gan3d.nn import set_training_precision

    torch.manual_seed(0)
    G, D = build_generator(smoke_cfg).eval(), build_discriminator(smoke_cfg)  # eval: deterministic ray samples
    z, angles = torch.randn(2, G.cfg.z_dim), torch.tensor([[0.0, 1.5, 0.0]] * 2)
    patch = Patch(torch.full([2, 2], 0.5), torch.zeros(2, 2))
    ref = G(z, None, angles, patch=patch, resolution=16)
    set_training_precision(replace(smoke_cfg, ["training.precision=bf16"]), G, D)
    assert G.synthesis.compute_dtype == D.compute_dtype == torch.bfloat16
    planes = G.synthesis(G.map(z, None, angles))
    img = G(z, None, angles, patch=patch, resolution=16)
    logits = D(img, torch.tensor([[0.5, 0.0, 0.0]] * 2))
    assert planes.dtype == img.dtype == logits.dtype == torch.float32
    err = (img - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.05  # bf16 convs really ran, and stayed close


def test_reference_precision_runs_ds_four_top_blocks_in_fp16_with_clamping(smoke_cfg):
    """training.precision 'reference': D's blocks of the 4 highest resolutions in fp16 (the reference's
    num_fp16_res=4: blocks at >= max(2^(log2 top + 1 - 4), 8)), the rest and G's synthesis in fp32, conv outputs
    clamped to 256 x gain. Runs the fp16 blocks on the CPU (torch has fp16 convolutions there)."""
    from gan3d.config import load_config, replace
    from gan3d.nn import resolve_precision, set_training_precision

    ffhq = load_config(ROOT / "experiments" / "ffhq512.yaml")
    assert build_discriminator(ffhq).use_fp16_blocks(4) == [512, 256, 128, 64]  # of 512 .. 8
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "reference"
    cfg = replace(smoke_cfg, ["training.precision=reference", "dataset.resolution=128", "training.patch.resolution=16"])
    torch.manual_seed(0)
    G, D = build_generator(cfg), build_discriminator(cfg)  # D blocks 128 .. 8
    assert set_training_precision(cfg, G, D) == "reference"
    seen = {}
    for r, block in zip(D.block_resolutions, D.blocks):
        block.register_forward_hook(lambda m, i, o, r=r: seen.__setitem__(r, o.dtype))
    params = torch.tensor([[0.5, 0.1, 0.2]] * 4)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    logits = D(x, params)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert seen == {128: torch.float16, 64: torch.float16, 32: torch.float16, 16: torch.float16, 8: torch.float32}
    assert G.synthesis.compute_dtype == torch.float32
    conv = D.blocks[0].conv0  # an fp16 conv: its activations are clamped to +-256 (x gain 1 here)
    with torch.no_grad():
        conv.weight.fill_(10.0)
    out = conv(torch.full((1, conv.weight.shape[1], 8, 8), 100.0, dtype=torch.float16))
    assert out.dtype == torch.float16 and out.max().item() == 256.0
    set_training_precision(replace(cfg, ["training.precision=fp32"]), G, D)
    assert all(b.dtype == torch.float32 for b in D.blocks)


def test_compiled_synthesis_matches_eager_with_the_same_noise_and_keeps_checkpoint_keys(smoke_cfg):
    """training.compile: the compiled synthesis draws eager's noise (fallback_random) and gives eager's planes and
    gradients within float rounding; the module's state_dict keys and an earlier copy (G_ema) are untouched."""
    import copy

    from gan3d.config import replace
    from gan3d.nn import compile_for_training

    cfg = replace(smoke_cfg, ["model.generator.triplane_resolution=8", "training.compile=true"])  # 2 blocks: fast build
    G = build_generator(cfg).requires_grad_(True)
    with torch.no_grad():  # noise strengths start at 0: make the noise show in the planes
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
    G_ema = copy.deepcopy(G)
    keys = list(G.state_dict())
    ws = G.map(torch.randn(2, G.cfg.z_dim), None, torch.zeros(2, 3)).detach()

    def planes_and_grads(seed):
        torch.manual_seed(seed)
        planes = G.synthesis(ws, "random")
        grads = torch.autograd.grad(planes.square().sum(), list(G.synthesis.parameters()))
        return planes.detach(), grads

    eager = planes_and_grads(7)
    compile_for_training(cfg, G, 2)
    compiled = planes_and_grads(7)
    assert not torch.equal(eager[0], planes_and_grads(8)[0])  # the noise matters, so equal noise is checked
    assert torch.allclose(compiled[0], eager[0], rtol=1e-5, atol=1e-5)
    for c, e in zip(compiled[1], eager[1]):
        assert torch.allclose(c, e, rtol=1e-4, atol=1e-5 * e.abs().max().item())
    assert list(G.state_dict()) == keys
    assert getattr(G_ema.synthesis, "_compiled_call_impl", None) is None


def test_compile_that_cannot_build_is_one_config_error(smoke_cfg):
    import torch._inductor.config as inductor_config

    from gan3d.config import replace
    from gan3d.errors import ConfigError
    from gan3d.nn import compile_for_training

    G = build_generator(smoke_cfg)  # other shapes than the test above: nothing cached can stand in
    with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/c++")}), pytest.raises(ConfigError) as e:
        compile_for_training(replace(smoke_cfg, ["training.compile=true"]), G, 2)
    assert str(e.value).startswith("key 'training.compile' = true: torch.compile cannot build on cpu here")
    assert "\n" not in str(e.value) and getattr(G.synthesis, "_compiled_call_impl", None) is None


def test_a_pose_with_its_own_radius_renders_as_a_camera_at_that_distance(smoke_cfg):
    """EG3D's cameras keep their own distance (a pose's 4th value): rendering [yaw, pitch, roll, r] equals rendering
    [yaw, pitch, roll] with dataset.camera.radius = r."""
    from dataclasses import replace as dc_replace
    torch.manual_seed(0)
    G = build_generator(smoke_cfg).eval()
    z = torch.randn(2, G.cfg.z_dim)
    angles = torch.tensor([[1.4, 1.5, 0.0], [1.7, 1.3, 0.0]])
    own = G(z, None, torch.cat([angles, torch.tensor([[1.05], [1.05]])], 1), resolution=16)
    G.camera = dc_replace(G.camera, radius=1.05)
    assert torch.allclose(own, G(z, None, angles, resolution=16), atol=1e-6)
    G.camera = dc_replace(G.camera, radius=1.0)
    assert not torch.allclose(own, G(z, None, angles, resolution=16), atol=1e-3)
