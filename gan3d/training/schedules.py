"""Every schedule of training, as a pure function of progress in kimg (DESIGN.md: kimg is the one axis)."""
from __future__ import annotations

from gan3d.config import PatchConfig


def _ramp(kimg: float, span_kimg: float) -> float:
    """0 -> 1 linearly over span_kimg (1 at once when span is 0)."""
    return 1.0 if span_kimg <= 0 else min(max(kimg / span_kimg, 0.0), 1.0)


def patch_beta(kimg: float, cfg: PatchConfig) -> float:
    """EpiGRAF Sec. 3.2: beta of Beta(alpha, beta) annealed linearly from beta_start to beta_end."""
    return cfg.beta_start + (cfg.beta_end - cfg.beta_start) * _ramp(kimg, cfg.anneal_kimg)


def patch_min_scale(kimg: float, cfg: PatchConfig) -> float:
    """Baseline 'uniform' sampling: the minimum scale anneals from max_scale down to min_scale."""
    return cfg.max_scale + (cfg.min_scale - cfg.max_scale) * _ramp(kimg, cfg.anneal_kimg)


def blur_sigma(kimg: float, sigma: float, fade_kimg: float) -> float:
    """Blur of D inputs fading linearly to 0 (EpiGRAF / EG3D blur fade-in)."""
    return sigma * (1.0 - _ramp(kimg, fade_kimg))


def density_noise(kimg: float, std: float, span_kimg: float) -> float:
    """Std of the Gaussian noise on raw density, decaying linearly to 0 (EpiGRAF, 5000 kimg)."""
    return std * (1.0 - _ramp(kimg, span_kimg))


def ema_beta(kimg: float, batch: int, ema_kimg: float, rampup: float) -> float:
    """Per-step EMA decay of G_ema for a half-life of ema_kimg, ramped up early (StyleGAN2-ADA)."""
    ema_nimg = ema_kimg * 1000
    if rampup > 0:
        ema_nimg = min(ema_nimg, kimg * 1000 * rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))
