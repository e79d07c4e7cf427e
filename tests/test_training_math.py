"""Patch sampling, patch extraction, losses, R1, ADA and single optimisation steps."""
import math

import numpy as np
import pytest
import torch

from gan3d import config as config_mod
from gan3d.config import PatchConfig
from gan3d.nn import Patch, build_discriminator, build_generator
from gan3d.nn.grid_sample_gradfix import grid_sample
from gan3d.training import losses, schedules
from gan3d.training.augment import AugmentPipe, augment, color_matrix
from gan3d.training.patches import extract_patches, sample_patches, sample_scales
from gan3d.training.phases import Batch, GanParts, adam_settings, make_optimizers, make_phases, phase_loss, run_phase


def test_beta_at_start_puts_nearly_all_scales_at_one():
    cfg = PatchConfig(min_scale=0.125, beta_start=0.001, beta_end=0.8, anneal_kimg=10000)
    s = sample_scales(20000, cfg, 0.0, np.random.default_rng(0))
    assert (s > 0.99).mean() > 0.99 and s.min() >= 0.125


@pytest.mark.parametrize("kimg", [2500.0, 5000.0, 10000.0, 20000.0])
def test_beta_sample_mean_tracks_the_annealed_beta_mean(kimg):
    cfg = PatchConfig(min_scale=0.25, alpha=1.0, beta_start=0.001, beta_end=0.8, anneal_kimg=10000)
    b = schedules.patch_beta(kimg, cfg)
    assert math.isclose(b, 0.001 + 0.799 * min(kimg / 10000, 1))
    s = sample_scales(40000, cfg, kimg, np.random.default_rng(1))
    expected = 0.25 + 0.75 * 1.0 / (1.0 + b)  # E[Beta(a, b)] = a / (a + b)
    assert abs(s.mean() - expected) < 0.01


def test_uniform_and_discrete_distributions():
    cfg = PatchConfig(distribution="uniform", min_scale=0.25, anneal_kimg=100)
    assert sample_scales(1000, cfg, 0.0, np.random.default_rng(0)).min() >= 0.9999  # min scale starts at 1
    s = sample_scales(5000, cfg, 50.0, np.random.default_rng(0))
    assert s.min() >= 0.625 - 1e-9 and s.min() < 0.64
    d = sample_scales(1000, PatchConfig(distribution="discrete_uniform", discrete_support=[0.25, 1.0]), 0,
                      np.random.default_rng(0))
    assert set(np.unique(d)) == {0.25, 1.0}


def test_patch_params_shared_within_minibatch_std_groups():
    p = sample_patches(8, PatchConfig(min_scale=0.25, beta_start=0.8), 0, np.random.default_rng(0), group_size=4)
    # group size 4 over 8 samples: groups are {0, 2, 4, 6} and {1, 3, 5, 7} (strided, as minibatch-std)
    for i in range(8):
        assert torch.equal(p.scales[i], p.scales[i % 2]) and torch.equal(p.offsets[i], p.offsets[i % 2])
    assert ((p.offsets >= 0) & (p.offsets <= 1 - p.scales + 1e-7)).all()


def test_extracted_patch_equals_the_matching_crop():
    img = torch.rand(2, 3, 33, 33)
    # scale (P-1)/(R-1) and offset m/(R-1) put patch pixels exactly on image pixels
    s, m = 16 / 32, torch.tensor([[3.0, 5.0], [0.0, 16.0]])
    patch = extract_patches(img, Patch(torch.full((2, 2), s), m / 32), 17)
    # offsets count from the bottom-left corner (the seed's NDC y points up): o_y = 5 px -> rows 11..27
    assert torch.allclose(patch[0], img[0, :, 11:28, 3:20], atol=1e-5)
    assert torch.allclose(patch[1], img[1, :, 0:17, 0:17], atol=1e-5)
    # a half-pixel offset gives the bilinear average of neighbours
    half = extract_patches(img, Patch(torch.full((1, 2), s), torch.tensor([[0.5 / 32, 0.0]])), 17)
    assert torch.allclose(half[0, :, :, 0], (img[0, :, 16:, 0] + img[0, :, 16:, 1]) / 2, atol=1e-5)


def test_patch_offset_zero_is_the_bottom_left_corner():
    """The issue's case: a 3x3 image arange(9), scale 0.5, offset (0, 0), 2x2 patch -> [[3, 4], [6, 7]]."""
    img = torch.arange(9.0).reshape(1, 1, 3, 3)
    patch = extract_patches(img, Patch(torch.full((1, 2), 0.5), torch.zeros(1, 2)), 2)
    assert torch.equal(patch[0, 0], torch.tensor([[3.0, 4.0], [6.0, 7.0]]))


def test_r1_equals_hand_computed_gradient_norm():
    w = torch.randn(1, 3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (w * x).flatten(1).sum(1) + 0.5 * (x ** 2).flatten(1).sum(1)  # grad = w + x
    penalty = losses.r1_penalty(logits, x)
    expected = (w + x.detach()).square().flatten(1).sum(1)
    assert torch.allclose(penalty, expected, atol=1e-5)
    assert math.isclose(losses.r1_loss(penalty, 0.1, 16).item(), expected.mean().item() * 0.05 * 16, rel_tol=1e-5)


def test_nonsaturating_losses_known_values():
    z = torch.zeros(3, 1)
    assert math.isclose(losses.g_nonsaturating(z).item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(losses.d_real(torch.full((2, 1), 10.0)).item(), math.log1p(math.exp(-10)), rel_tol=1e-4)
    assert math.isclose(losses.d_fake(torch.full((2, 1), -10.0)).item(), math.log1p(math.exp(-10)), rel_tol=1e-4)


def test_schedules_are_linear_in_kimg():
    assert schedules.blur_sigma(0, 10, 200) == 10 and schedules.blur_sigma(100, 10, 200) == 5
    assert schedules.blur_sigma(400, 10, 200) == 0
    assert schedules.density_noise(2500, 1.0, 5000) == 0.5
    assert schedules.ema_beta(1e6, 64, 10, 0.05) == pytest.approx(0.5 ** (64 / 10000))
    lr, betas = adam_settings(0.002, [0.0, 0.99], 16)
    assert math.isclose(lr, 0.002 * 16 / 17) and math.isclose(betas[1], 0.99 ** (16 / 17))


def test_lazy_r1_phases():
    cfg = config_mod.load_config(None, ["training.gamma=0.1", "training.r1_interval=16"])
    assert [(p.name, p.interval) for p in make_phases(cfg.training)] == [("Gmain", 1), ("Dmain", 1), ("Dreg", 16)]
    cfg = config_mod.replace(cfg, ["training.r1_interval=1"])
    assert [p.terms for p in make_phases(cfg.training)][1] == ("d_fake", "d_real", "r1")


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_grid_sample_gradfix_matches_pytorch_to_second_order(padding):
    """R1 through ADA needs d/dw of a gradient through grid_sample; the CUDA op has no double backward, so gan3d
    uses its own. PyTorch's CPU op has one: both must agree on value, gradient and the gradient's gradient."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64)
    theta = torch.tensor([[[0.9, 0.3, 0.1], [-0.2, 1.1, -0.05]]] * 2, dtype=torch.float64)
    grid = torch.nn.functional.affine_grid(theta, [2, 3, 8, 8], align_corners=False)
    w0 = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64)
    results = []
    for op in (grid_sample, lambda x, g, **kw: torch.nn.functional.grid_sample(x, g, "bilinear", **kw)):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        y = op(x, grid, padding_mode=padding, align_corners=False)
        (gx,) = torch.autograd.grad((y * w).sum(), x, create_graph=True)  # as R1 does
        (gx.square().sum()).backward()
        results.append((y.detach(), gx.detach(), w.grad))
    for mine, ref in zip(*results):
        assert torch.allclose(mine, ref, atol=1e-10), (padding, (mine - ref).abs().max())
    assert results[0][2].abs().sum() > 0


def test_ada_identity_at_zero_and_p_heuristic():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert torch.equal(augment(x, 0.0), x)
    assert torch.allclose(color_matrix(4, 0.0, "cpu"), torch.eye(4).expand(4, 4, 4))
    y = augment(x, 1.0)
    assert y.shape == x.shape and not torch.allclose(y, x)
    pipe = AugmentPipe("ada", 0.0, target=0.6, speed_kimg=1.0)
    pipe.update(0.9, 100)  # D too sure of reals -> more augmentation
    assert math.isclose(float(pipe.p), 0.1, rel_tol=1e-6)
    pipe.update(0.1, 50)
    assert math.isclose(float(pipe.p), 0.05, rel_tol=1e-5)


def _loss_at(phase, parts, batch, seed):
    torch.manual_seed(seed)
    parts.rng = np.random.default_rng(seed)
    parts.torch_gen.manual_seed(seed)
    return phase_loss(phase, parts, batch, kimg=1000.0)[0].item()


@pytest.mark.parametrize("net", ["G", "D"])
def test_one_step_reduces_its_loss_on_a_fixed_batch(smoke_cfg, net):
    cfg = config_mod.replace(smoke_cfg, ["training.augment.kind=none", "training.blur_sigma=0",
                                         "training.lr_g=0.01", "training.lr_d=0.01", "training.gamma=0"])
    torch.manual_seed(0)
    G, D = build_generator(cfg).train(), build_discriminator(cfg).train()
    parts = GanParts(cfg, G, D, AugmentPipe("none", 0, 0.6, 1), np.random.default_rng(0))
    opt = make_optimizers(cfg, G, D)
    batch = Batch(torch.rand(8, 3, 32, 32) * 2 - 1, torch.tensor([[1.57, 1.3, 0.0]] * 8), torch.zeros(8, 0))
    phase = make_phases(cfg.training)[0 if net == "G" else 1]
    before = _loss_at(phase, parts, batch, 5)
    torch.manual_seed(5)
    parts.rng, _ = np.random.default_rng(5), parts.torch_gen.manual_seed(5)
    stats = run_phase(phase, parts, opt[net], [batch], kimg=1000.0)
    after = _loss_at(phase, parts, batch, 5)
    assert after < before and stats[f"nonfinite_grads_{net}"] == 0


def test_w_avg_is_tracked_on_the_d_phase_only(smoke_cfg):
    """StyleGAN2 / the seed: w_avg follows the mean w (beta 0.998) on the D phase's G forward, so truncation
    pulls towards the mean of training, not towards w = 0."""
    cfg = config_mod.replace(smoke_cfg, ["training.augment.kind=none", "training.blur_sigma=0"])
    torch.manual_seed(0)
    G, D = build_generator(cfg).train(), build_discriminator(cfg).train()
    parts = GanParts(cfg, G, D, AugmentPipe("none", 0, 0.6, 1), np.random.default_rng(0))
    batch = Batch(torch.rand(8, 3, 32, 32) * 2 - 1, torch.tensor([[1.57, 1.3, 0.0]] * 8), torch.zeros(8, 0))
    g_phase, d_phase = make_phases(cfg.training)[:2]
    phase_loss(g_phase, parts, batch, kimg=0.0)
    assert torch.equal(G.mapping.w_avg, torch.zeros_like(G.mapping.w_avg))
    parts.torch_gen.manual_seed(3)
    phase_loss(d_phase, parts, batch, kimg=0.0)
    parts.torch_gen.manual_seed(3)
    z = torch.randn(8, cfg.model.generator.z_dim, generator=parts.torch_gen)
    with torch.no_grad():
        w = G.mapping(z, None)[:, 0]
    assert torch.allclose(G.mapping.w_avg, w.mean(0) * (1 - 0.998), atol=1e-6)


def test_each_rank_draws_its_own_noise_and_a_seed_reproduces_it():
    from gan3d.training.loop import rank_seed
    draws = {}
    for rank in (0, 1):
        torch.manual_seed(rank_seed(7, rank, 0))
        draws[rank] = torch.randn(16)
    torch.manual_seed(rank_seed(7, 1, 0))
    assert torch.equal(torch.randn(16), draws[1])
    assert not torch.allclose(draws[0], draws[1])
    assert rank_seed(7, 0, 100) != rank_seed(7, 0, 0)  # a resumed run does not replay step 0's draws
