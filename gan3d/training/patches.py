"""Patch sampling (EpiGRAF Sec. 3.2) and cutting the same patches out of real images.

As the reference's code does it (training_utils.py): one scale and offset per minibatch-std group, laid out
with repeat_interleave (samples 0..G-1 share the first patch). D's minibatch-std groups are strided (sample i is in
group i mod B/G), so for a batch larger than the group size every std group mixes different patches; the
reference's comment says otherwise, its code does this.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gan3d.config import PatchConfig
from gan3d.draws import Draws
from gan3d.nn.generator import Patch
from gan3d.nn.layers import mbstd_group_size
from gan3d.render.rays import patch_grid
from gan3d.training import schedules


def sample_scales(n: int, cfg: PatchConfig, kimg: float, draws: Draws, name: str = "patch") -> np.ndarray:
    """[n] patch scales (float64) from the configured distribution at progress `kimg`."""
    if cfg.distribution == "beta":  # s = Beta(alpha, beta(t)) (max - min) + min
        b = schedules.patch_beta(kimg, cfg)
        return draws.beta(f"{name}_beta", cfg.alpha, b, n) * (cfg.max_scale - cfg.min_scale) + cfg.min_scale
    lo = schedules.patch_min_scale(kimg, cfg)  # anneals from max_scale down to min_scale
    if cfg.distribution == "uniform":  # s ~ U[min_scale(t), max_scale]
        return draws.random(f"{name}_scale_u", n) * (cfg.max_scale - lo) + lo
    if cfg.distribution == "discrete_uniform":  # the support inside [min_scale(t), max_scale], uniformly
        support = [s for s in cfg.discrete_support if lo <= s <= cfg.max_scale]
        return draws.choice(f"{name}_scale", support, n).astype(np.float32).astype(np.float64)
    raise ValueError(f"unknown patch distribution {cfg.distribution!r}")


def sample_patches(batch: int, cfg: PatchConfig, kimg: float, draws: Draws, group_size: int = 4, device="cpu",
                   name: str = "patch") -> Patch:
    """Patch params for a batch: one per minibatch-std group, repeat_interleave'd (see the module doc).
    The arithmetic is the reference's: scales from float64 cast to float32, offsets u (1 - s) in float32."""
    G = mbstd_group_size(batch, group_size)
    s = torch.from_numpy(sample_scales(batch // G, cfg, kimg, draws, name)).float()  # [n]
    scales = torch.stack([s, s], dim=1)  # [n, 2]
    offsets = draws.uniform(f"{name}_offset_u", scales.shape) * (1.0 - scales)  # o ~ U[0, 1 - s], [n, 2]
    return Patch(scales.repeat_interleave(G, 0).to(device), offsets.repeat_interleave(G, 0).to(device))


def extract_patches(images: torch.Tensor, patch: Patch, resolution: int) -> torch.Tensor:
    """Bilinearly resample [B, C, H, W] images at the patch grid -> [B, C, P, P] (same grid as the rays).

    The grid's y points up (NDC) while grid_sample's points down the rows, hence the sign flip."""
    grid = patch_grid(resolution, patch.scales, patch.offsets, images.shape[0], images.device)  # [B, P*P, 2]
    grid = (grid * torch.tensor([1.0, -1.0], device=images.device)).reshape(-1, resolution, resolution, 2)
    grid = grid.to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
