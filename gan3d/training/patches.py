"""Patch sampling (EpiGRAF Sec. 3.2) and cutting the same patches out of real images."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gan3d.config import PatchConfig
from gan3d.nn.generator import Patch
from gan3d.nn.layers import mbstd_group_size
from gan3d.render.rays import patch_grid
from gan3d.training import schedules


def sample_scales(n: int, cfg: PatchConfig, kimg: float, rng: np.random.Generator) -> np.ndarray:
    """[n] patch scales in [min_scale, max_scale] from the configured distribution at progress `kimg`."""
    if cfg.distribution == "beta":  # s = min + (max - min) * Beta(alpha, beta(t))
        b = schedules.patch_beta(kimg, cfg)
        return cfg.min_scale + (cfg.max_scale - cfg.min_scale) * rng.beta(cfg.alpha, b, size=n)
    if cfg.distribution == "uniform":  # s ~ U[min_scale(t), max_scale]
        return rng.uniform(schedules.patch_min_scale(kimg, cfg), cfg.max_scale, size=n)
    if cfg.distribution == "discrete_uniform":
        return rng.choice(np.asarray(cfg.discrete_support, dtype=np.float64), size=n)
    raise ValueError(f"unknown patch distribution {cfg.distribution!r}")


def sample_patches(batch: int, cfg: PatchConfig, kimg: float, rng: np.random.Generator, group_size: int = 4,
                   device="cpu") -> Patch:
    """Patch params for a batch, shared within each minibatch-std group (group j = samples j, j+n, ...)."""
    G = mbstd_group_size(batch, group_size)
    n = batch // G
    s = sample_scales(n, cfg, kimg, rng)  # [n]
    o = rng.uniform(size=(n, 2)) * (1 - s)[:, None]  # o ~ U[0, 1 - s] per axis, [n, 2]
    scales = torch.as_tensor(np.stack([s, s], 1), dtype=torch.float32).repeat(G, 1)  # [B, 2]
    offsets = torch.as_tensor(o, dtype=torch.float32).repeat(G, 1)  # [B, 2]
    return Patch(scales.to(device), offsets.to(device))


def extract_patches(images: torch.Tensor, patch: Patch, resolution: int) -> torch.Tensor:
    """Bilinearly resample [B, C, H, W] images at the patch grid -> [B, C, P, P] (same grid as the rays).

    The grid's y points up (NDC) while grid_sample's points down the rows, hence the sign flip."""
    grid = patch_grid(resolution, patch.scales, patch.offsets, images.shape[0], images.device)  # [B, P*P, 2]
    grid = (grid * torch.tensor([1.0, -1.0], device=images.device)).reshape(-1, resolution, resolution, 2)
    grid = grid.to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
