"""GAN phases as data, and the training step: the reference's procedure (its training_loop.py and loss.py).

A phase names the network it updates, how often it runs, and the loss terms it minimises. With lazy R1
(interval > 1) D has two phases: Dmain (logistic loss) every step and Dreg (R1) every `r1_interval` steps;
Adam's lr and betas are then adjusted by interval / (interval + 1) (StyleGAN2 Sec. 3.1). docs/FIDELITY.md lists
every convention of the step with its place in the reference and its test.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.distributed as dist

from gan3d.config import ExperimentConfig, TrainingConfig
from gan3d.draws import Draws, RandomDraws
from gan3d.nn import PatchDiscriminator, TriplaneGenerator
from gan3d.nn.generator import Patch
from gan3d.nn.resample import gaussian_blur
from gan3d.render.cameras import sample_camera_angles
from gan3d.training import losses, schedules
from gan3d.training.augment import AugmentPipe
from gan3d.training.patches import extract_patches, sample_patches


@dataclass(frozen=True)
class Phase:
    name: str  # Gall | Dmain | Dreg | Dall (the reference's names without G regularisation)
    net: str  # 'G' or 'D'
    interval: int  # runs on steps where step % interval == 0; also its loss gain (lazy regularisation)
    terms: tuple[str, ...]  # loss terms minimised: g_fake, d_fake, d_real, r1


def make_phases(t: TrainingConfig) -> list[Phase]:
    phases = [Phase("Gall", "G", 1, ("g_fake",))]
    if t.gamma > 0 and t.r1_interval > 1:
        phases += [Phase("Dmain", "D", 1, ("d_fake", "d_real")), Phase("Dreg", "D", t.r1_interval, ("r1",))]
    else:
        phases += [Phase("Dall", "D", 1, ("d_fake", "d_real") + (("r1",) if t.gamma > 0 else ()))]
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
class Fakes:
    """What one micro-batch of fakes is made from: z [B, z_dim], one-hot labels [B, c_dim], the cameras they are
    rendered from [B, 3] and the cameras G is conditioned on (GPC) [B, 3]."""
    z: torch.Tensor
    labels: torch.Tensor
    angles: torch.Tensor
    cond: torch.Tensor

    def split(self, size: int) -> list["Fakes"]:
        return [Fakes(*parts) for parts in zip(*(t.split(size) for t in (self.z, self.labels, self.angles, self.cond)))]


@dataclass
class PosePool:
    """The dataset entries fakes draw their cameras and labels from, mirrored entries included (the reference
    draws dataset indices for every fake: training_loop.py:281-287). angles [N, 3] or None, labels [N, c_dim]."""
    angles: Optional[torch.Tensor]
    labels: torch.Tensor


@dataclass
class GanParts:
    """What a step touches. `G`/`D` may be the same modules on every rank (gradients are all-reduced).
    `trace`, when a dict, receives each phase's intermediate tensors (tests compare them with the reference)."""
    cfg: ExperimentConfig
    G: TriplaneGenerator
    D: PatchDiscriminator
    augment: AugmentPipe
    draws: Draws = field(default_factory=RandomDraws)
    pool: Optional[PosePool] = None
    G_ema: Optional[TriplaneGenerator] = None
    trace: Optional[dict] = None

    def record(self, phase: str, key: str, value) -> None:
        if self.trace is not None:
            self.trace.setdefault(phase, {})[key] = value.detach().clone() if torch.is_tensor(value) else value


@dataclass(frozen=True)
class Progress:
    """Where a step is: images shown before it and its index (the schedules' inputs)."""
    nimg: int
    step: int

    @property
    def kimg(self) -> float:
        return self.nimg / 1000


def draw_fakes(parts: GanParts, phases: list[Phase], n: int, progress: Progress, device) -> dict[str, Fakes]:
    """Every phase's fakes for one step, drawn up front as the reference does (training_loop.py:279-300), also
    for phases that do not run this step: latents; dataset entries for the labels, and for the cameras when
    `dataset.camera.dist` is 'dataset', else cameras from that distribution; with GPC, the conditioning cameras
    rolled by one among a random subset of all the step's fakes (probability schedules.gpc_spoof_p)."""
    cfg, G = parts.cfg, parts.G
    cam = cfg.dataset.camera
    out = {}
    for phase in phases:
        d = parts.draws.scope(phase.name)
        z = d.normal("z", (n, G.cfg.z_dim), device)
        needs_pool = cam.dist == "dataset" or G.c_dim > 0
        idx = torch.from_numpy(d.integers("pose_index", len(parts.pool.labels), n)) if needs_pool else None
        labels = parts.pool.labels[idx].to(device) if G.c_dim else torch.zeros(n, 0, device=device)
        angles = (parts.pool.angles[idx].to(device) if cam.dist == "dataset"
                  else sample_camera_angles(n, cam, d, device))
        out[phase.name] = Fakes(z, labels, angles, angles)
    if G.cfg.camera_cond:
        cond = torch.cat([f.cond for f in out.values()])  # [P * n, 3]
        spoof = parts.draws.uniform("gpc_spoof_u", (len(cond),), device) < schedules.gpc_spoof_p(
            progress.kimg, G.cfg.camera_cond_swap_prob)
        cond = cond.clone()
        cond[spoof] = cond[spoof].roll(1, 0)
        for f, c in zip(out.values(), cond.split(n)):
            f.cond = c
    return out


def run_G(parts: GanParts, fake: Fakes, patch: Patch, progress: Progress, draws: Draws,
          update_w_avg: bool = False) -> torch.Tensor:
    """Fakes for a phase. The D phase's G forward also tracks w_avg (the reference's update_emas=True), so
    truncation pulls towards the mean w of training."""
    r = parts.cfg.model.generator.render
    noise = schedules.density_noise(progress.kimg, r.density_noise_std, r.density_noise_kimg, progress.step)
    with torch.profiler.record_function("gan3d::generator"):  # labels for `gan3d bench`'s time shares
        return parts.G(fake.z, fake.labels, fake.angles, patch=patch, resolution=parts.cfg.training.patch.resolution,
                       noise_mode="random", density_noise=noise, cond_angles=fake.cond, update_w_avg=update_w_avg,
                       draws=draws)


def run_D(parts: GanParts, images, patch: Patch, labels, angles, progress: Progress, draws: Draws,
          record: Optional[tuple[str, str]] = None) -> torch.Tensor:
    """Blur (fading), augmentation, D: the reference's run_D (loss.py:74-83)."""
    t = parts.cfg.training
    images = gaussian_blur(images, schedules.blur_sigma(progress.nimg, t.blur_sigma, t.blur_fade_kimg))
    images = parts.augment(images, draws)
    if record:
        parts.record(*record, images)  # what D sees
    with torch.profiler.record_function("gan3d::discriminator"):
        return parts.D(images, patch.as_vector(), labels, angles)


def phase_loss(phase: Phase, parts: GanParts, real: Batch, fake: Fakes, progress: Progress
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one phase on one micro-batch (its gain included), and its statistics (0-dim tensors on the
    device: no host sync per step; the loop reads them once per tick). Fakes and reals each get a patch draw of
    their own (loss.py:69,86): D's fakes and reals are not cut alike."""
    device = real.images.device
    t = parts.cfg.training
    B = real.images.shape[0]
    draws = parts.draws.scope(phase.name)
    group = parts.cfg.model.discriminator.mbstd_group
    stats: dict[str, torch.Tensor] = {}
    total = torch.zeros([], device=device)
    if {"g_fake", "d_fake"} & set(phase.terms):
        patch = sample_patches(B, t.patch, progress.kimg, draws, group, device, name="fake_patch")
        with torch.set_grad_enabled("g_fake" in phase.terms):
            images = run_G(parts, fake, patch, progress, draws, update_w_avg=phase.net == "D")
        parts.record(phase.name, "fake_images", images)
        logits = run_D(parts, images if phase.net == "G" else images.detach(), patch, fake.labels, fake.angles,
                       progress, draws, record=(phase.name, "fake_images_blurred"))
        parts.record(phase.name, "fake_logits", logits[:, 0])
        stats["logits_fake"] = logits.detach().mean()
        if "g_fake" in phase.terms:
            loss = losses.g_nonsaturating(logits)
            stats["loss_G"] = loss.detach()
        else:
            loss = losses.d_fake(logits)
            stats["loss_D_fake"] = loss.detach()
        total = total + loss
    if {"d_real", "r1"} & set(phase.terms):
        patch = sample_patches(B, t.patch, progress.kimg, draws, group, device, name="real_patch")
        reals = extract_patches(real.images, patch, t.patch.resolution).detach()
        parts.record(phase.name, "real_patches", reals)
        reals.requires_grad_("r1" in phase.terms)
        logits = run_D(parts, reals, patch, real.labels, real.angles, progress, draws,
                       record=(phase.name, "real_patches_blurred"))
        parts.record(phase.name, "real_logits", logits[:, 0])
        stats["logits_real"] = logits.detach().mean()
        stats["real_sign"] = logits.detach().sign().mean()  # ADA's statistic, from Dreg's reals too (as there)
        if "d_real" in phase.terms:
            loss = losses.d_real(logits)
            stats["loss_D_real"] = loss.detach()
            total = total + loss
        if "r1" in phase.terms:
            grads = losses.r1_grads(logits, reals)
            parts.record(phase.name, "r1_grads", grads)
            penalty = grads.square().sum(dim=[1, 2, 3])  # [B]
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


def run_phase(phase: Phase, parts: GanParts, optimizer: torch.optim.Optimizer, reals: list[Batch],
              fakes: list[Fakes], progress: Progress) -> dict[str, torch.Tensor]:
    """Accumulate a phase's gradients over micro-batches, sync, sanitise, step. Returns mean stats (tensors).
    Micro-batch gradients add up, as in the reference (each micro-batch backpropagates its own mean loss)."""
    net = parts.G if phase.net == "G" else parts.D
    other = parts.D if phase.net == "G" else parts.G
    net.requires_grad_(True)
    other.requires_grad_(False)
    if parts.trace is not None:
        parts.record(phase.name, "params_before", {n: p.detach().clone() for n, p in net.named_parameters()})
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, torch.Tensor] = {}
    for real, fake in zip(reals, fakes):
        loss, stats = phase_loss(phase, parts, real, fake, progress)
        with torch.profiler.record_function("gan3d::backward"):
            loss.backward()
        for k, v in stats.items():
            totals[k] = totals.get(k, 0.0) + v / len(reals)
    totals[f"nonfinite_grads_{phase.net}"] = sanitize_and_sync_grads(net).float()
    if parts.trace is not None:
        parts.record(phase.name, "grads", {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    with torch.profiler.record_function("gan3d::optimizer"):
        optimizer.step()
    if parts.trace is not None:
        parts.record(phase.name, "params_after", {n: p.detach().clone() for n, p in net.named_parameters()})
    net.requires_grad_(False)
    return totals


def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """G_ema <- lerp(G, G_ema, beta) for parameters; buffers (w_avg, noise) copied."""
    with torch.no_grad():
        for p_ema, p in zip(G_ema.parameters(), G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(G_ema.buffers(), G.buffers()):
            b_ema.copy_(b)


def training_step(parts: GanParts, phases: list[Phase], optimizers: dict[str, torch.optim.Optimizer],
                  reals: list[Batch], progress: Progress) -> dict[str, dict[str, torch.Tensor]]:
    """One iteration of the reference's loop body (training_loop.py:271-367): every phase's fakes drawn, the
    phases due at this step run in order (Dmain sees G after its step), then G_ema. Returns each phase's stats."""
    t = parts.cfg.training
    n = sum(r.images.shape[0] for r in reals)
    device = reals[0].images.device
    fakes = draw_fakes(parts, phases, n, progress, device)
    size = reals[0].images.shape[0]
    stats = {}
    for phase in phases:
        if progress.step % phase.interval == 0:
            stats[phase.name] = run_phase(phase, parts, optimizers[phase.net], reals, fakes[phase.name].split(size),
                                          progress)
    if parts.G_ema is not None:
        update_ema(parts.G_ema, parts.G, schedules.ema_beta(progress.nimg, t.batch, t.ema_kimg, t.ema_rampup))
    return stats


def make_optimizers(cfg: ExperimentConfig, G, D) -> dict[str, torch.optim.Optimizer]:
    t = cfg.training
    lr_d, betas_d = adam_settings(t.lr_d, t.betas, t.r1_interval if t.gamma > 0 else 1)
    # fused: PyTorch's one-kernel Adam (CPU and CUDA), the same update as the per-parameter loop at ~1/3 of its time
    return {"G": torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=tuple(t.betas), eps=1e-8, fused=True),
            "D": torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas_d, eps=1e-8, fused=True)}
