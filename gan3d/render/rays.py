"""Ray directions for full images or patches, stratified and importance depths along rays."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F


def patch_grid(resolution: int, scales: Optional[torch.Tensor] = None, offsets: Optional[torch.Tensor] = None,
               batch: int = 1, device="cpu") -> torch.Tensor:
    """Image-space coordinates of a patch's pixels: [B, R=res*res, 2] (x right, y down, [-1, 1]).

    EpiGRAF Sec. 3.2: x' = (x + 1) * s - 1 + 2 * o, o in [0, 1 - s]. Pixel centres follow the seed
    (linspace(-1, 1)), i.e. align_corners=True; real patches are cut with the same grid.
    """
    lin = torch.linspace(-1, 1, resolution, device=device)
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    xy = torch.stack([x, y], dim=-1).reshape(1, -1, 2).expand(batch, -1, -1)  # [B, R, 2]
    if scales is None:
        return xy
    return (xy + 1) * scales[:, None, :] - 1 + 2 * offsets[:, None, :]  # [B, R, 2]


def ray_directions(resolution: int, fov: float, scales=None, offsets=None, batch: int = 1, device="cpu") -> torch.Tensor:
    """Unit ray directions in camera space: [B, R, 3]; camera looks down -z, image y points down."""
    xy = patch_grid(resolution, scales, offsets, batch, device)  # [B, R, 2]
    z = -torch.ones_like(xy[..., :1]) / math.tan(math.radians(fov) / 2)
    d = torch.cat([xy[..., :1], -xy[..., 1:], z], dim=-1)  # flip y: image down -> camera up
    return F.normalize(d, dim=-1)


def world_rays(c2w: torch.Tensor, dirs_cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, 4, 4], [B, R, 3] -> origins [B, R, 3], directions [B, R, 3] in world space."""
    dirs = dirs_cam @ c2w[:, :3, :3].transpose(1, 2)  # [B, R, 3]
    origins = c2w[:, None, :3, 3].expand_as(dirs)
    return origins, dirs


def stratified_depths(shape: tuple[int, int], num: int, start: float, end: float, perturb: bool,
                      generator: Optional[torch.Generator] = None, device="cpu") -> torch.Tensor:
    """[B, R, S] depths evenly spaced in [start, end], jittered within their bin when `perturb`."""
    B, R = shape
    z = torch.linspace(start, end, num, device=device).expand(B, R, num).clone()  # [B, R, S]
    if perturb:  # seed's perturb_points: uniform shift of +-half a bin
        delta = (end - start) / max(num - 1, 1)
        z = z + (torch.rand(B, R, num, generator=generator).to(device) - 0.5) * delta
    return z


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, num: int, deterministic: bool,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Inverse-CDF sampling (NeRF, Mildenhall et al. 2020 Sec. 5.2). bins [N, K+1], weights [N, K] -> [N, num]."""
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # [N, K+1]
    if deterministic:
        u = torch.linspace(0, 1, num, device=bins.device).expand(len(bins), num).contiguous()
    else:
        u = torch.rand(len(bins), num, generator=generator).to(bins.device)
    idx = torch.searchsorted(cdf, u, right=True)
    below, above = (idx - 1).clamp(min=0), idx.clamp(max=cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    denom = torch.where(cdf_hi - cdf_lo < 1e-5, torch.ones_like(cdf_lo), cdf_hi - cdf_lo)
    return bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)


def importance_depths(depths: torch.Tensor, weights: torch.Tensor, num: int, deterministic: bool = False,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """[B, R, S] coarse depths and weights -> [B, R, num] depths drawn where the coarse weights are high."""
    B, R, S = depths.shape
    w = weights.reshape(B * R, 1, S) + 1e-5
    # EG3D's smoothing: a 2-tap max then a 2-tap mean keeps thin surfaces from being missed
    w = F.avg_pool1d(F.max_pool1d(w, 2, 1, padding=1), 2, 1).squeeze(1) + 0.01  # [B*R, S]
    z = depths.reshape(B * R, S)
    mids = 0.5 * (z[:, 1:] + z[:, :-1])  # [B*R, S-1]: bin edges between samples
    fine = sample_pdf(mids, w[:, 1:-1], num, deterministic, generator)  # [B*R, num]
    return fine.detach().reshape(B, R, num)
