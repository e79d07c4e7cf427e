"""GAN phases as data, and one function that runs a phase (StyleGAN2-ADA's phase loop, EpiGRAF's patches).

A phase names the network it updates, how often it runs, and the loss terms it minimises. With lazy R1
(interval > 1) D has two phases: Dmain (logistic loss) every step and Dreg (R1) every `r1_interval` steps;
Adam's lr and betas are then adjusted by interval / (interval + 1) (StyleGAN2 Sec. 3.1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from gan3d.config import ExperimentConfig, TrainingConfig
from gan3d.nn import PatchDiscriminator, TriplaneGenerator
from gan3d.nn.generator import Patch
from gan3d.nn.layers import gaussian_blur
from gan3d.render.cameras import sample_camera_angles
from gan3d.training import losses, schedules
from gan3d.training.augment import AugmentPipe
from gan3d.training.patches import extract_patches, sample_patches


@dataclass(frozen=True)
class Phase:
    name: str  # Gmain | Dmain | Dreg | Dboth
    net: str  # 'G' or 'D'
    interval: int  # runs on steps where step % interval == 0
    terms: tuple[str, ...]  # loss terms minimised: g_fake, d_fake, d_real, r1


def make_phases(t: TrainingConfig) -> list[Phase]:
    phases = [Phase("Gmain", "G", 1, ("g_fake",))]
    if t.gamma > 0 and t.r1_interval > 1:
        phases += [Phase("Dmain", "D", 1, ("d_fake", "d_real")), Phase("Dreg", "D", t.r1_interval, ("r1",))]
    else:
        phases += [Phase("Dboth", "D", 1, ("d_fake", "d_real") + (("r1",) if t.gamma > 0 else ()))]
    return phases


def adam_settings(lr: float, betas, reg_interval: int) -> tuple[float, tuple[float, float]]:
    """Lazy-regularisation adjustment of Adam's hyperparameters (StyleGAN2-ADA training_loop.py)."""
    ratio = reg_interval / (reg_interval + 1) if reg_interval > 1 else 1.0
    return lr * ratio, (betas[0] ** ratio, betas[1] ** ratio)


@dataclass
class Batch:
    """One micro-batch of reals [B, 3, H, W] in [-1, 1], their poses [B, 3] and one-hot labels [B, c_dim]."""
    images: torch.Tensor
    angles: torch.Tensor
    labels: torch.Tensor


@dataclass
class GanParts:
    """What a phase touches. `G`/`D` may be the same modules on every rank (gradients are all-reduced)."""
    cfg: ExperimentConfig
    G: TriplaneGenerator
    D: PatchDiscriminator
    augment: AugmentPipe
    rng: np.random.Generator  # patch params and camera draws
    torch_gen: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))


def _fake_inputs(parts: GanParts, batch: Batch, device):
    """Latents, labels and cameras for the fakes of a micro-batch (poses/labels drawn like the reals)."""
    B = batch.images.shape[0]
    cam = parts.cfg.dataset.camera
    z = torch.randn(B, parts.G.cfg.z_dim, generator=parts.torch_gen).to(device)
    perm = torch.randperm(B, generator=parts.torch_gen)
    labels = batch.labels[perm]
    if cam.dist == "dataset":  # the seed renders fakes from real poses
        angles = batch.angles[perm].to(device)
    else:
        angles = sample_camera_angles(B, cam, parts.torch_gen, device=device)
    cond = angles
    if parts.G.cfg.camera_cond:  # GPC: condition on a different pose with prob swap_prob
        swap = torch.rand(B, 1, generator=parts.torch_gen).to(device) < parts.G.cfg.camera_cond_swap_prob
        cond = torch.where(swap, angles[torch.randperm(B, generator=parts.torch_gen)], angles)
    return z, labels, angles, cond


def run_G(parts: GanParts, z, labels, angles, cond, patch: Patch, kimg: float, update_w_avg: bool = False) -> torch.Tensor:
    """Fakes for a phase. The D phase's G forward also tracks w_avg (the seed's update_emas=True), so
    truncation pulls towards the mean w of training."""
    r = parts.cfg.model.generator.render
    noise = schedules.density_noise(kimg, r.density_noise_std, r.density_noise_kimg)
    with torch.profiler.record_function("gan3d::generator"):  # labels for `gan3d bench`'s time shares
        return parts.G(z, labels, angles, patch=patch, resolution=parts.cfg.training.patch.resolution,
                   noise_mode="random", density_noise=noise, cond_angles=cond, update_w_avg=update_w_avg)


def run_D(parts: GanParts, images, patch: Patch, labels, angles, kimg: float) -> torch.Tensor:
    t = parts.cfg.training
    images = gaussian_blur(images, schedules.blur_sigma(kimg, t.blur_sigma, t.blur_fade_kimg))
    images = parts.augment(images)
    with torch.profiler.record_function("gan3d::discriminator"):
        return parts.D(images, patch.as_vector(), labels, angles)


def phase_loss(phase: Phase, parts: GanParts, batch: Batch, kimg: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one phase on one micro-batch, and its statistics (0-dim tensors on the device: no host
    sync per step; the loop reads them once per tick)."""
    device = batch.images.device
    t = parts.cfg.training
    B = batch.images.shape[0]
    patch = sample_patches(B, t.patch, kimg, parts.rng, parts.cfg.model.discriminator.mbstd_group, device)
    stats: dict[str, torch.Tensor] = {}
    total = torch.zeros([], device=device)
    if {"g_fake", "d_fake"} & set(phase.terms):
        z, labels, angles, cond = _fake_inputs(parts, batch, device)
        with torch.set_grad_enabled("g_fake" in phase.terms):
            fake = run_G(parts, z, labels, angles, cond, patch, kimg, update_w_avg=phase.net == "D")
        logits = run_D(parts, fake if phase.net == "G" else fake.detach(), patch, labels, angles, kimg)
        stats["logits_fake"] = logits.detach().mean()
        if "g_fake" in phase.terms:
            loss = losses.g_nonsaturating(logits)
            stats["loss_G"] = loss.detach()
        else:
            loss = losses.d_fake(logits)
            stats["loss_D_fake"] = loss.detach()
        total = total + loss
    if {"d_real", "r1"} & set(phase.terms):
        reals = extract_patches(batch.images, patch, t.patch.resolution).detach()
        reals.requires_grad_("r1" in phase.terms)
        logits = run_D(parts, reals, patch, batch.labels, batch.angles, kimg)
        stats["logits_real"] = logits.detach().mean()
        stats["real_sign"] = logits.detach().sign().mean()
        if "d_real" in phase.terms:
            loss = losses.d_real(logits)
            stats["loss_D_real"] = loss.detach()
            total = total + loss
        if "r1" in phase.terms:
            penalty = losses.r1_penalty(logits, reals)
            stats["r1_penalty"] = penalty.detach().mean()
            total = total + losses.r1_loss(penalty, t.gamma, phase.interval)
    return total, stats


def sanitize_and_sync_grads(module: torch.nn.Module) -> torch.Tensor:
    """All-reduce gradients across ranks (StyleGAN2-ADA style, one flat buffer) and zero nan/inf.

    Returns how many gradient entries were not finite before sanitising (a 0-dim tensor, read at the tick).
    """
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return torch.zeros([])
    flat = torch.cat([p.grad.flatten() for p in params])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
    bad = (~torch.isfinite(flat)).sum()
    flat.nan_to_num_(nan=0, posinf=1e5, neginf=-1e5)
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad = g.view_as(p)  # views of the flat buffer: no copy back (zero_grad(set_to_none) drops them)
    return bad


def run_phase(phase: Phase, parts: GanParts, optimizer: torch.optim.Optimizer, micro_batches: list[Batch],
              kimg: float) -> dict[str, torch.Tensor]:
    """Accumulate a phase's gradients over micro-batches, sync, sanitise, step. Returns mean stats (tensors)."""
    net = parts.G if phase.net == "G" else parts.D
    other = parts.D if phase.net == "G" else parts.G
    net.requires_grad_(True)
    other.requires_grad_(False)
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, torch.Tensor] = {}
    for mb in micro_batches:
        loss, stats = phase_loss(phase, parts, mb, kimg)
        with torch.profiler.record_function("gan3d::backward"):
            loss.div(len(micro_batches)).backward()
        for k, v in stats.items():
            totals[k] = totals.get(k, 0.0) + v / len(micro_batches)
    totals[f"nonfinite_grads_{phase.net}"] = sanitize_and_sync_grads(net).float()
    with torch.profiler.record_function("gan3d::optimizer"):
        optimizer.step()
    net.requires_grad_(False)
    return totals


def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """G_ema <- lerp(G, G_ema, beta) for parameters; buffers (w_avg, noise) copied."""
    with torch.no_grad():
        for p_ema, p in zip(G_ema.parameters(), G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(G_ema.buffers(), G.buffers()):
            b_ema.copy_(b)


def make_optimizers(cfg: ExperimentConfig, G, D) -> dict[str, torch.optim.Optimizer]:
    t = cfg.training
    lr_d, betas_d = adam_settings(t.lr_d, t.betas, t.r1_interval if t.gamma > 0 else 1)
    # fused: PyTorch's one-kernel Adam (CPU and CUDA), the same update as the per-parameter loop at ~1/3 of its time
    return {"G": torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=tuple(t.betas), eps=1e-8, fused=True),
            "D": torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas_d, eps=1e-8, fused=True)}
