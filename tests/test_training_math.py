"""Patch sampling, patch extraction, losses, R1, schedules, the fakes' draws and single optimisation steps."""
import math

import numpy as np
import pytest
import torch

from gan3d import config as config_mod
from gan3d.config import PatchConfig
from gan3d.draws import RandomDraws
from gan3d.errors import ConfigError
from gan3d.nn import Patch, build_discriminator, build_generator
from gan3d.nn.grid_sample_gradfix import grid_sample
from gan3d.nn.layers import minibatch_std
from gan3d.training import losses, schedules
from gan3d.training.augment import AugmentPipe
from gan3d.training.patches import extract_patches, sample_patches, sample_scales
from gan3d.training.phases import (Batch, GanParts, PosePool, Progress, adam_settings, draw_fakes,
                                   make_optimizers, make_phases, phase_loss, run_phase, training_step)


def draws(seed):
    return RandomDraws(np.random.default_rng(seed))


class Recording(RandomDraws):
    """Production draws that also note every name asked for."""

    def __init__(self, seed=0):
        super().__init__(np.random.default_rng(seed))
        self.names = []

    def normal(self, name, shape, device=None):
        self.names.append(name)
        return super().normal(name, shape, device)

    def uniform(self, name, shape, device=None):
        self.names.append(name)
        return super().uniform(name, shape, device)


def test_beta_at_start_puts_nearly_all_scales_at_one():
    cfg = PatchConfig(min_scale=0.125, beta_start=0.001, beta_end=0.8, anneal_kimg=10000)
    s = sample_scales(20000, cfg, 0.0, draws(0))
    assert (s > 0.99).mean() > 0.99 and s.min() >= 0.125


@pytest.mark.parametrize("kimg", [2500.0, 5000.0, 10000.0, 20000.0])
def test_beta_sample_mean_tracks_the_annealed_beta_mean(kimg):
    cfg = PatchConfig(min_scale=0.25, alpha=1.0, beta_start=0.001, beta_end=0.8, anneal_kimg=10000)
    b = schedules.patch_beta(kimg, cfg)
    assert math.isclose(b, 0.001 + 0.799 * min(kimg / 10000, 1))
    s = sample_scales(40000, cfg, kimg, draws(1))
    expected = 0.25 + 0.75 * 1.0 / (1.0 + b)  # E[Beta(a, b)] = a / (a + b)
    assert abs(s.mean() - expected) < 0.01


def test_uniform_distribution_anneals_its_minimum_scale():
    cfg = PatchConfig(distribution="uniform", min_scale=0.25, anneal_kimg=100)
    assert sample_scales(1000, cfg, 0.0, draws(0)).min() >= 0.9999  # min scale starts at 1
    s = sample_scales(5000, cfg, 50.0, draws(0))
    assert s.min() >= 0.625 - 1e-9 and s.min() < 0.64


def test_discrete_uniform_picks_from_the_support_the_annealed_minimum_allows():
    """The reference's discrete_uniform: support [0.25, 1] by default, filtered to [min_scale(t), max_scale]."""
    cfg = PatchConfig(distribution="discrete_uniform", min_scale=0.25, anneal_kimg=100)
    assert list(cfg.discrete_support) == [0.25, 1.0]
    assert set(np.unique(sample_scales(1000, cfg, 0.0, draws(0)))) == {1.0}  # only max_scale at the start
    assert set(np.unique(sample_scales(1000, cfg, 60.0, draws(0)))) == {1.0}  # min scale 0.55 still > 0.25
    assert set(np.unique(sample_scales(1000, cfg, 100.0, draws(0)))) == {0.25, 1.0}
    with pytest.raises(ConfigError, match="discrete_support.*max_scale"):
        config_mod.load_config(None, ["training.patch.distribution=discrete_uniform",
                                      "training.patch.discrete_support=[0.25,0.5]"])


def test_patches_are_laid_out_as_the_reference_lays_them_out():
    """One patch per minibatch-std group, repeat_interleave'd: samples 0-3 share one, 4-7 another. D's std groups
    are strided ({0, 2, 4, 6}, {1, 3, 5, 7}), so each std group sees both patches, as in the reference's code."""
    p = sample_patches(8, PatchConfig(min_scale=0.25, beta_start=0.8), 0, draws(0), group_size=4)
    for i in range(8):
        assert torch.equal(p.scales[i], p.scales[4 * (i // 4)]) and torch.equal(p.offsets[i], p.offsets[4 * (i // 4)])
    assert not torch.equal(p.scales[0], p.scales[4])
    assert ((p.offsets >= 0) & (p.offsets <= 1 - p.scales + 1e-7)).all()
    # the std layer's groups: a sample's std feature changes when another sample of its group changes
    x = torch.randn(8, 2, 4, 4)
    y = x.clone()
    y[2] += 1  # sample 2 is in sample 0's group (strided), not in sample 1's
    a, b = minibatch_std(x, 4)[:, -1, 0, 0], minibatch_std(y, 4)[:, -1, 0, 0]
    assert a[0] != b[0] and a[1] == b[1]


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


def test_schedules_are_linear_and_read_as_the_reference_reads_them():
    assert schedules.blur_sigma(0, 10, 200) == 10 and schedules.blur_sigma(100_000, 10, 200) == 5
    assert schedules.blur_sigma(400_000, 10, 200) == 0 and schedules.blur_sigma(0, 10, 0) == 0
    # STEP.md's float edge: at 160000 images sigma is 1.9999999999999996, so the blur has 2 x 5 + 1 taps, not 13
    assert math.floor(schedules.blur_sigma(160_000, 10, 200) * 3) == 5
    assert schedules.density_noise(2500, 1.0, 5000, step=1) == 0.5
    assert schedules.density_noise(0, 1.0, 5000, step=0) == 0.0  # the reference's G starts at 0
    assert schedules.ema_beta(1_000_000_000, 64, 10, 0.05) == pytest.approx(0.5 ** (64 / 10000))
    assert schedules.ema_beta(0, 64, 10, 0.05) == 0.0  # ramp-up: G_ema starts as a copy of G
    assert schedules.gpc_spoof_p(0, 0.5) == 1.0 and schedules.gpc_spoof_p(500, 0.5) == 0.75
    lr, betas = adam_settings(0.002, [0.0, 0.99], 16)
    assert math.isclose(lr, 0.002 * 16 / 17) and math.isclose(betas[1], 0.99 ** (16 / 17))


def test_lazy_r1_phases():
    cfg = config_mod.load_config(None, ["training.gamma=0.1", "training.r1_interval=16"])
    assert [(p.name, p.interval) for p in make_phases(cfg.training)] == [("Gall", 1), ("Dmain", 1), ("Dreg", 16)]
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


def _parts(cfg, seed=0, pool=None, **kw):
    torch.manual_seed(0)
    G, D = build_generator(cfg).train().requires_grad_(False), build_discriminator(cfg).train().requires_grad_(False)
    pool = pool or PosePool(torch.tensor([[1.57, 1.3, 0.0]] * 8), torch.zeros(8, 0))
    return GanParts(cfg, G, D, AugmentPipe("none", 0, 0.6, 1), draws(seed), pool, **kw)


def _reals(n=8):
    return Batch(torch.rand(n, 3, 32, 32) * 2 - 1, torch.tensor([[1.57, 1.3, 0.0]] * n), torch.zeros(n, 0))


def _loss_at(phase, parts, batch, fake, seed):
    torch.manual_seed(seed)
    parts.draws = draws(seed)
    return phase_loss(phase, parts, batch, fake, Progress(1_000_000, 1))[0].item()


@pytest.mark.parametrize("net", ["G", "D"])
def test_one_step_reduces_its_loss_on_a_fixed_batch(smoke_cfg, net):
    cfg = config_mod.replace(smoke_cfg, ["training.augment.kind=none", "training.blur_sigma=0",
                                         "training.lr_g=0.01", "training.lr_d=0.01", "training.gamma=0"])
    parts = _parts(cfg)
    opt = make_optimizers(cfg, parts.G, parts.D)
    batch = _reals()
    phase = make_phases(cfg.training)[0 if net == "G" else 1]
    fake = draw_fakes(parts, [phase], 8, Progress(0, 1), "cpu")[phase.name]
    before = _loss_at(phase, parts, batch, fake, 5)
    torch.manual_seed(5)
    parts.draws = draws(5)
    stats = run_phase(phase, parts, opt[net], [batch], [fake], Progress(1_000_000, 1))
    after = _loss_at(phase, parts, batch, fake, 5)
    assert after < before and stats[f"nonfinite_grads_{net}"] == 0


def test_micro_batch_gradients_add_up_as_in_the_reference(smoke_cfg):
    """The reference backpropagates each micro-batch's mean loss and sums: two micro-batches of 4 give the sum of
    their gradients, not their mean."""
    cfg = config_mod.replace(smoke_cfg, ["training.augment.kind=none", "training.blur_sigma=0", "training.gamma=0"])
    parts = _parts(cfg, trace={})
    phase = make_phases(cfg.training)[1]
    reals = _reals()
    fake = draw_fakes(parts, [phase], 8, Progress(0, 1), "cpu")[phase.name]
    grads = []
    for split in ([reals], [Batch(*(t[:4] for t in (reals.images, reals.angles, reals.labels))),
                            Batch(*(t[4:] for t in (reals.images, reals.angles, reals.labels)))]):
        torch.manual_seed(1)
        parts.draws = draws(1)
        opt = torch.optim.SGD(parts.D.parameters(), lr=0.0)  # no move: both runs see the same D
        run_phase(phase, parts, opt, split, fake.split(8 // len(split)), Progress(1000, 1))
        grads.append(parts.trace[phase.name]["grads"]["out.weight"])
    assert grads[0].abs().max() > 0
    # patches differ between the two layouts (one draw per micro-batch), so compare sizes, not values: the sum of
    # two micro-batch means is about twice one mean over the whole batch
    ratio = (grads[1].norm() / grads[0].norm()).item()
    assert 1.5 < ratio < 2.6, ratio


def test_fakes_take_cameras_and_labels_of_random_dataset_entries_for_every_phase(smoke_cfg):
    """The reference draws a dataset entry per fake and phase (mirrored entries included) for the camera and the
    label, not the current micro-batch's real poses."""
    cfg = config_mod.replace(smoke_cfg, ["dataset.use_labels=true", "dataset.c_dim=3"])
    angles = torch.stack([torch.linspace(-3, 3, 30), torch.full((30,), 1.3), torch.zeros(30)], 1)
    labels = torch.nn.functional.one_hot(torch.arange(30) % 3, 3).float()
    parts = _parts(cfg, pool=PosePool(angles, labels))
    phases = make_phases(cfg.training)
    fakes = draw_fakes(parts, phases, 64, Progress(0, 1), "cpu")
    assert set(fakes) == {p.name for p in phases}  # Dreg's are drawn too, as the reference draws them
    for f in fakes.values():
        idx = ((f.angles[:, :1] - angles[:, 0]).abs() < 1e-6).float().argmax(1)  # which entry each fake took
        assert torch.equal(f.angles, angles[idx]) and torch.equal(f.labels, labels[idx])
        assert len(idx.unique()) > 20  # spread over the set, not a permutation of 8 reals
    assert not torch.equal(fakes["Gall"].angles, fakes["Dmain"].angles)


def test_gpc_conditions_on_another_fakes_camera_with_the_annealed_probability(smoke_cfg):
    cfg = config_mod.replace(smoke_cfg, ["model.generator.camera_cond=true", "model.generator.camera_cond_swap_prob=0.5"])
    angles = torch.stack([torch.linspace(-3, 3, 400), torch.full((400,), 1.3), torch.zeros(400)], 1)
    parts = _parts(cfg, pool=PosePool(angles, torch.zeros(400, 0)))
    phases = make_phases(cfg.training)
    for kimg, p in ((0, 1.0), (500, 0.75), (2000, 0.5)):
        fakes = draw_fakes(parts, phases, 256, Progress(kimg * 1000, 1), "cpu")
        swapped = torch.cat([(f.cond != f.angles).any(1) for f in fakes.values()]).float().mean().item()
        assert abs(swapped - p) < 0.06, (kimg, swapped)


def test_density_noise_is_drawn_from_the_second_step_on(smoke_cfg):
    cfg = config_mod.replace(smoke_cfg, ["training.augment.kind=none"])
    parts = _parts(cfg)
    opts = make_optimizers(cfg, parts.G, parts.D)
    names = []
    for step in (0, 1):
        parts.draws = Recording()
        training_step(parts, make_phases(cfg.training), opts, [_reals()], Progress(step * 8, step))
        names.append(parts.draws.names)
    assert not any("density_noise" in n for n in names[0])
    assert "density_noise_coarse" in names[1] and "density_noise_fine" in names[1]


def test_w_avg_is_tracked_on_the_d_phase_only(smoke_cfg):
    """StyleGAN2 / the reference: w_avg follows the mean w (beta 0.998) on the D phase's G forward, so truncation
    pulls towards the mean of training, not towards w = 0."""
    cfg = config_mod.replace(smoke_cfg, ["training.augment.kind=none", "training.blur_sigma=0"])
    parts = _parts(cfg)
    G, batch = parts.G, _reals()
    g_phase, d_phase = make_phases(cfg.training)[:2]
    fakes = draw_fakes(parts, [g_phase, d_phase], 8, Progress(0, 1), "cpu")
    phase_loss(g_phase, parts, batch, fakes["Gall"], Progress(0, 1))
    assert torch.equal(G.mapping.w_avg, torch.zeros_like(G.mapping.w_avg))
    phase_loss(d_phase, parts, batch, fakes["Dmain"], Progress(0, 1))
    with torch.no_grad():
        w = G.mapping(fakes["Dmain"].z, None)[:, 0]
    assert torch.allclose(G.mapping.w_avg, w.mean(0) * (1 - 0.998), atol=1e-6)


def test_each_rank_draws_its_own_noise_and_a_seed_reproduces_it():
    from gan3d.training.resume import seed_streams
    out = {}
    for rank in (0, 1):
        rng = seed_streams(7, rank, 0)
        out[rank] = (torch.randn(16), rng.random(4))
    rng = seed_streams(7, 1, 0)
    assert torch.equal(torch.randn(16), out[1][0]) and np.array_equal(rng.random(4), out[1][1])
    assert not torch.allclose(out[0][0], out[1][0])
    seed_streams(7, 0, 100)
    assert not torch.equal(torch.randn(16), out[0][0])  # a resumed run does not replay step 0's draws


def test_cpu_training_flushes_denormals_that_would_slow_every_op(smoke_cfg):
    """exp() of a density far below zero lands under 1.2e-38; prepare_device makes the CPU treat such values as 0."""
    from gan3d.training.loop import prepare_device

    threads = torch.get_num_threads()
    torch.set_flush_denormal(False)  # (an earlier test of this process may have trained)
    tiny = torch.tensor([1e-39])  # a denormal float32, made while denormals are kept
    assert (tiny * 1.0).item() > 0
    try:
        prepare_device(torch.device("cpu"), smoke_cfg)
        assert (tiny * 1.0).item() == 0.0 and torch.exp(torch.tensor([-88.5])).item() == 0.0
    finally:
        torch.set_num_threads(threads)
