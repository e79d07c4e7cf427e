"""One training iteration of gan3d against one of the reference's own code (shared/seed_parity/STEP.md).

The fixture holds one iteration of the reference's loop (Gall, Dmain, Dreg at a step where all three run, batch 4,
blur on, mid-way Beta) from the tiny G/D of G_tiny.npz / D_tiny.npz, with every random draw recorded. gan3d runs
its own `training_step` on the same networks with those draws fed through its `Draws` seam (the object the
training code asks every random number of), and must reproduce the loss terms, logits, images, R1 gradients,
every parameter's gradient, each Adam step, the EMA update and w_avg.

Tolerances: STEP.md measured how far the reference moves from itself with a different float summation order
(2 threads instead of 1): outputs 1.4e-6 relative, gradients 6.6e-6 of each tensor's max |g| (scalar
noise_strength gradients 3.4e-5). gan3d sums in its own order (batched modulated convs, its FIR ops, fused Adam),
so the bounds here are a few times those.
"""
import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gan3d.config import load_config
from gan3d.nn import build_discriminator, build_generator, prepare_for_training
from gan3d.nn.reference_names import load_reference_state, reference_names
from gan3d.training.augment import AugmentPipe
from gan3d.training.phases import Batch, GanParts, PosePool, Progress, make_optimizers, make_phases, training_step

FIXTURES = Path(os.environ.get("GAN3D_SEED_PARITY", Path(__file__).resolve().parents[2] / "shared" / "seed_parity"))
pytestmark = pytest.mark.skipif(not (FIXTURES / "step_tiny.npz").exists(),
                                reason=f"no step fixture at {FIXTURES} (set GAN3D_SEED_PARITY)")
PHASES = ("Gall", "Dmain", "Dreg")
# the reference's tiny networks (seed_parity/config.json) and STEP.md's settings, in gan3d's keys
STEP_CFG = ["dataset.resolution=32", "dataset.camera.fov=12", "dataset.camera.ray_start=0.88",
            "dataset.camera.ray_end=1.12", "dataset.camera.radius=1", "dataset.camera.dist=dataset",
            "model.generator.z_dim=64", "model.generator.w_dim=64", "model.generator.triplane_resolution=32",
            "model.generator.triplane_channels=8", "model.generator.channel_base=1024",
            "model.generator.channel_max=64", "model.generator.mlp_hidden=64", "model.generator.render.num_coarse=8",
            "model.generator.render.num_fine=8", "model.generator.render.cube_scale=0.2",
            "model.discriminator.channel_base=1024", "model.discriminator.channel_max=64",
            "training.patch.resolution=16", "training.patch.anneal_kimg=300", "training.batch=4", "training.gamma=0.1",
            "training.r1_interval=16", "training.blur_sigma=10", "training.blur_fade_kimg=200",
            "training.augment.kind=none", "training.precision=fp32"]


class ReplayDraws:
    """The reference's recorded draws, asked for by gan3d's names (a `gan3d.draws.Draws`)."""

    def __init__(self, arrays, scope: str = "", pose_index=None):
        self.arrays, self.prefix, self.pose_index = arrays, f"draw/{scope}/" if scope else "draw/", pose_index or {}
        self.used: set[str] = set() if not scope else None

    def _get(self, name, shape):
        key = self.prefix + name
        assert key in self.arrays, f"gan3d asked for a draw the reference did not make: {key}"
        arr = self.arrays[key]
        assert arr.size == int(np.prod(shape)), (key, arr.shape, tuple(shape))
        return arr.reshape(tuple(shape))

    def normal(self, name, shape, device=None):
        return torch.from_numpy(self._get(name, shape).copy()).to(device or "cpu")

    uniform = normal

    def beta(self, name, a, b, size):
        return self._get(name, (size,)).astype(np.float64)

    def integers(self, name, high, size):
        assert name == "pose_index"  # the recorded cameras sit in the pool at these entries
        return self.pose_index[self.prefix]

    def scope(self, name):
        return ReplayDraws(self.arrays, name, self.pose_index)


def _close(ours, ref, rel, what):
    ours, ref = ours.detach().double().numpy(), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    err, scale = np.abs(ours - ref).max(), max(np.abs(ref).max(), 1e-12)
    if not err <= rel * scale:
        pytest.fail(f"{what}: max error {err:.3g} > {rel:g} x max |ref| {scale:.3g}")


@pytest.fixture(scope="module")
def step():
    torch.set_num_threads(1)
    arrays = dict(np.load(FIXTURES / "step_tiny.npz"))
    cfg = load_config(None, STEP_CFG)
    G, D = build_generator(cfg), build_discriminator(cfg)
    g_ref = {k[6:]: v for k, v in np.load(FIXTURES / "G_tiny.npz").items() if k.startswith("param/")}
    d_ref = {k[6:]: v for k, v in np.load(FIXTURES / "D_tiny.npz").items() if k.startswith("param/")}
    load_reference_state(G, g_ref, "G")
    load_reference_state(D, d_ref, "D")
    G_ema = copy.deepcopy(G).eval()
    with torch.no_grad():  # mid-training, G_ema differs from G: p - p/16 (STEP.md)
        for p in G_ema.parameters():
            p.copy_(p - p / 16)
    G.train().requires_grad_(False)
    D.train().requires_grad_(False)
    prepare_for_training(cfg, G, D, 4)
    g_ema_before = {n: p.detach().clone() for n, p in G_ema.named_parameters()}
    # the fakes' cameras come from dataset entries: here, the entries holding the recorded cameras
    cams = torch.from_numpy(np.concatenate([arrays[f"draw/{ph}/camera_angles"] for ph in PHASES]))
    index = {f"draw/{ph}/": np.arange(4 * i, 4 * i + 4) for i, ph in enumerate(PHASES)}
    trace: dict = {}
    parts = GanParts(cfg, G, D, AugmentPipe("none", 0, 0.6, 500), ReplayDraws(arrays, pose_index=index),
                     PosePool(cams, torch.zeros(12, 0)), G_ema, trace)
    phases = make_phases(cfg.training)
    reals = [Batch(torch.from_numpy(arrays["input/real_images"]), torch.from_numpy(arrays["input/real_camera_angles"]),
                   torch.zeros(4, 0))]
    cur_nimg, step_idx = int(arrays["sched/cur_nimg"]), int(arrays["sched/batch_idx"])
    stats = training_step(parts, phases, make_optimizers(cfg, G, D), reals, Progress(cur_nimg, step_idx))
    names = {"G": reference_names(G, "G", g_ref), "D": reference_names(D, "D", d_ref)}
    return dict(arrays=arrays, trace=trace, stats=stats, G=G, D=D, G_ema=G_ema, names=names,
                g_ema_before=g_ema_before, phases=phases)


def test_the_step_runs_the_reference_phases_in_its_order(step):
    assert [p.name for p in step["phases"]] == list(PHASES)
    assert list(step["trace"]) == list(PHASES)


@pytest.mark.parametrize("phase", PHASES)
def test_images_patches_and_logits_match(step, phase):
    a, tr = step["arrays"], step["trace"][phase]
    keys = {"Gall": ["fake_images", "fake_images_blurred", "fake_logits"],
            "Dmain": ["fake_images", "fake_images_blurred", "fake_logits", "real_patches", "real_patches_blurred",
                      "real_logits"],
            "Dreg": ["real_patches", "real_patches_blurred", "real_logits", "r1_grads"]}[phase]
    for k in keys:
        _close(tr[k], a[f"output/{phase}/{k}"], 1e-5, f"{phase} {k}")


@pytest.mark.parametrize("phase", PHASES)
def test_loss_terms_match(step, phase):
    a, s = step["arrays"], step["stats"][phase]
    r = lambda name: a[f"output/{phase}/report/Loss/{name}"]  # noqa: E731  per-sample reports of the reference
    if phase == "Gall":
        expect = {"loss_G": r("G/loss").mean(), "logits_fake": r("scores/fake").mean()}
    elif phase == "Dmain":
        fake = np.log1p(np.exp(r("scores/fake").astype(np.float64)))  # softplus
        expect = {"loss_D_fake": fake.mean(), "loss_D_real": (r("D/loss") - fake).mean(),
                  "logits_fake": r("scores/fake").mean(), "logits_real": r("scores/real").mean(),
                  "real_sign": r("signs/real").mean()}
    else:
        expect = {"r1_penalty": r("D/r1_penalty").mean(), "logits_real": r("scores/real").mean(),
                  "real_sign": r("signs/real").mean()}
    for k, v in expect.items():
        _close(s[k], v, 1e-5, f"{phase} {k}")


@pytest.mark.parametrize("phase", PHASES)
def test_every_gradient_matches(step, phase):
    a, net = step["arrays"], "G" if phase == "Gall" else "D"
    grads, names = step["trace"][phase]["grads"], step["names"][net]
    ref_keys = {k.split("/", 2)[2] for k in a if k.startswith((f"grad/{phase}/", f"grad_rows/{phase}/"))}
    rows = a["index/rows"].astype(int)
    checked = set()
    for ours, ref_name in names.items():
        g = grads.get(ours)
        if ref_name not in ref_keys:  # the reference's gradient is None: ours must be None (or 0, the same step)
            assert g is None or not g.any(), f"{phase}: gan3d has a gradient for {ours}, the reference none"
            continue
        if g is None:  # an exactly zero gradient of the reference may be None here (the same Adam step)
            assert not a[f"grad/{phase}/{ref_name}"].any(), f"{phase}: no gradient for {ours}"
            checked.add(ref_name)
            continue
        if f"grad/{phase}/{ref_name}" in a:
            ref = a[f"grad/{phase}/{ref_name}"]
        else:  # the three largest D tensors: every 32nd row, and the whole tensor's statistics
            ref, g = a[f"grad_rows/{phase}/{ref_name}"], g[rows]
        tol = 2e-4 if g.numel() == 1 else 5e-5  # x max |g| of the tensor (STEP.md: 3.4e-5 and 6.6e-6 thread to thread)
        _close(g.reshape(ref.shape), ref, tol, f"{phase} grad {ours} ({ref_name})")
        checked.add(ref_name)
    assert checked == ref_keys, ref_keys - checked


@pytest.mark.parametrize("phase", PHASES)
def test_each_adam_step_matches_outside_the_eps_regime(step, phase):
    """Adam's step is lr g / (|g| + eps) at t = 1: where |g| is near eps the sign of a tiny gradient decides it,
    so steps are compared where the reference's |g| exceeds 1e-3 of the tensor's largest."""
    a, tr, net = step["arrays"], step["trace"][phase], "G" if phase == "Gall" else "D"
    rows = a["index/rows"].astype(int)
    moved = 0
    for ours, ref_name in step["names"][net].items():
        if ours not in tr["params_after"]:  # a buffer
            continue
        delta = tr["params_after"][ours] - tr["params_before"][ours]
        key = f"param_delta/{phase}/{ref_name}"
        if key not in a:
            key, delta = f"param_delta_rows/{phase}/{ref_name}", delta[rows]
        ref = a[key].reshape(delta.shape)
        gkey = key.replace("param_delta", "grad")
        if gkey not in a:
            assert not ref.any() and not delta.any(), f"{phase}: {ours} moved without a gradient"
            continue
        g = np.abs(a[gkey]).reshape(delta.shape)
        mask = g > 1e-3 * max(g.max(), 1e-30)
        if mask.any():  # a delta is exact in float32, so it carries the rounding of the parameter (its ulp)
            before = tr["params_before"][ours] if key.startswith("param_delta/") else tr["params_before"][ours][rows]
            ulp = np.spacing(np.abs(before.numpy()))
            err = (np.abs(delta.numpy() - ref) - 2 * ulp)[mask].max()
            if not err <= 1e-3 * np.abs(ref).max():
                pytest.fail(f"{phase} step of {ours}: error {err:.3g} beyond 2 ulp, max |step| {np.abs(ref).max():.3g}")
            moved += int(mask.sum())
    assert moved > 1000


def test_ema_update_and_w_avg_match(step):
    a, G, G_ema = step["arrays"], step["G"], step["G_ema"]
    names = step["names"]["G"]
    for ours, p in G_ema.named_parameters():
        delta = p.detach() - step["g_ema_before"][ours]
        ref = a[f"ema_delta/{names[ours]}"]
        _close(delta, ref, 2e-3, f"ema delta {ours}")  # the step's own error times (1 - ema_beta)
    _close(G.mapping.w_avg, a["buffer_after/Dmain/mapping.w_avg"], 1e-6, "G w_avg after Dmain")
    _close(G_ema.mapping.w_avg, a["ema_after/mapping.w_avg"], 1e-6, "G_ema w_avg")
