"""Every schedule of training, as a pure function of progress (DESIGN.md: kimg is the one axis).

Each takes the images shown before the step (`nimg`, or `kimg` = nimg / 1000), as the reference evaluates it: its
loop updates the schedules after every iteration from the new cur_nimg, so step k sees the value at k x batch.
"""
from __future__ import annotations

from gan3d.config import PatchConfig


def linear(kimg: float, start: float, end: float, span_kimg: float) -> float:
    """start -> end linearly over span_kimg, held at the ends (the reference's linear_schedule)."""
    if kimg >= span_kimg:
        return end
    if kimg <= 0:
        return start
    return start + (end - start) * kimg / span_kimg


def patch_beta(kimg: float, cfg: PatchConfig) -> float:
    """EpiGRAF Sec. 3.2: beta of Beta(alpha, beta) annealed linearly from beta_start to beta_end."""
    return linear(kimg, cfg.beta_start, cfg.beta_end, cfg.anneal_kimg)


def patch_min_scale(kimg: float, cfg: PatchConfig) -> float:
    """Baselines 'uniform' and 'discrete_uniform': the minimum scale anneals from max_scale down to min_scale."""
    return linear(kimg, cfg.max_scale, cfg.min_scale, cfg.anneal_kimg)


def blur_sigma(nimg: int, sigma: float, fade_kimg: float) -> float:
    """Blur of D inputs fading linearly to 0 (EpiGRAF / StyleGAN3's blur fade-in; none at all when fade_kimg is 0).
    From nimg, as the reference computes it (loss.py:95), so blur_size = floor(3 sigma) falls on the same side of
    each float edge."""
    return max(1 - nimg / (fade_kimg * 1e3), 0) * sigma if fade_kimg > 0 else 0.0


def density_noise(kimg: float, std: float, span_kimg: float, step: int) -> float:
    """Std of the Gaussian noise on raw density, decaying linearly to 0 (EpiGRAF, 5000 kimg). 0 in a run's first
    step: the reference's G starts with nerf_noise_std = 0 and sets it only after that step
    (networks_epigraf.py:248, training_loop.py:378)."""
    return 0.0 if step == 0 else linear(kimg, std, 0.0, span_kimg)


def ema_beta(nimg: int, batch: int, ema_kimg: float, rampup: float) -> float:
    """Per-step EMA decay of G_ema for a half-life of ema_kimg, ramped up early (StyleGAN2-ADA; 0 = no ramp-up)."""
    ema_nimg = ema_kimg * 1000
    if rampup > 0:
        ema_nimg = min(ema_nimg, nimg * rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


def gpc_spoof_p(kimg: float, final: float) -> float:
    """GPC: the probability that G is conditioned on another fake's camera, 1 -> `final` over 1000 kimg
    (the reference's loss.py:60)."""
    return linear(kimg, 1.0, final, 1000)
