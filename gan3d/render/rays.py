"""Ray directions for full images or patches, stratified and importance depths along rays."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from gan3d.draws import GLOBAL, Draws


def patch_grid(resolution: int, scales: Optional[torch.Tensor] = None, offsets: Optional[torch.Tensor] = None,
               batch: int = 1, device="cpu") -> torch.Tensor:
    """NDC coordinates of a patch's pixels, row-major from the top-left pixel: [B, R=res*res, 2] (x right, y UP).

    EpiGRAF Sec. 3.2 as the seed computes it: x' = (x + 1) s - 1 + 2 o for x and y alike, with pixel
    centres on the borders (x = linspace(-1, 1), y = linspace(1, -1)). Since y points up, offset (0, 0)
    is the image's bottom-left corner and a larger o_y moves the patch up.
    """
    xs = torch.linspace(-1, 1, resolution, device=device)
    y, x = torch.meshgrid(-xs, xs, indexing="ij")  # y = +1 on row 0
    xy = torch.stack([x, y], dim=-1).reshape(1, -1, 2).expand(batch, -1, -1)  # [B, R, 2]
    if scales is None:
        return xy
    return (xy + 1) * scales[:, None, :] - 1 + 2 * offsets[:, None, :]  # [B, R, 2]


def ray_directions(resolution: int, fov: float | torch.Tensor, scales=None, offsets=None, batch: int = 1,
                   device="cpu") -> torch.Tensor:
    """Unit ray directions in camera space: [B, R, 3] = normalise(x, y, -1 / tan(fov / 2)); looks down -z, y up.
    fov in degrees: a float, or a 0-dim tensor to differentiate through."""
    xy = patch_grid(resolution, scales, offsets, batch, device)  # [B, R, 2]
    half = torch.deg2rad(fov) / 2 if torch.is_tensor(fov) else math.radians(fov) / 2
    z = -torch.ones_like(xy[..., :1]) / (torch.tan(half) if torch.is_tensor(half) else math.tan(half))
    return F.normalize(torch.cat([xy, z], dim=-1), dim=-1)


def world_rays(c2w: torch.Tensor, dirs_cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, 4, 4], [B, R, 3] -> origins [B, R, 3], directions [B, R, 3] in world space."""
    dirs = dirs_cam @ c2w[:, :3, :3].transpose(1, 2)  # [B, R, 3]
    origins = c2w[:, None, :3, 3].expand_as(dirs)
    return origins, dirs


def stratified_depths(shape: tuple[int, int], num: int, start: float, end: float, perturb: bool,
                      draws: Draws = GLOBAL, device="cpu") -> torch.Tensor:
    """[B, R, S] depths evenly spaced in [start, end]; with `perturb`, each is redrawn uniformly between its
    neighbours' midpoints (the seed's perturb_points), so samples stay inside [start, end]."""
    B, R = shape
    z = torch.linspace(start, end, num, device=device).expand(B, R, num)  # [B, R, S]
    if not perturb:
        return z.contiguous()
    mids = 0.5 * (z[..., 1:] + z[..., :-1])  # [B, R, S-1]
    lower = torch.cat([z[..., :1], mids], -1)
    upper = torch.cat([mids, z[..., -1:]], -1)
    return lower + (upper - lower) * draws.uniform("depth_jitter", (B, R, num), device)


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, num: int, deterministic: bool,
               draws: Draws = GLOBAL, eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF sampling (NeRF, Mildenhall et al. 2020 Sec. 5.2) as the seed does it: eps is added to the
    weights, so all-zero weights give uniform samples. bins [N, K+1], weights [N, K] -> [N, num]."""
    N, K = weights.shape
    weights = weights + eps
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # [N, K+1]
    if deterministic:
        u = torch.linspace(0, 1, num, device=bins.device).expand(N, num).contiguous()
    else:
        u = draws.uniform("importance_u", (N, num), bins.device)
    idx = torch.searchsorted(cdf, u)  # first cdf >= u
    below, above = (idx - 1).clamp(min=0), idx.clamp(max=K)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)  # an empty bin is never chosen anyway
    return bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)


def importance_depths(depths: torch.Tensor, weights: torch.Tensor, num: int, deterministic: bool = False,
                      draws: Draws = GLOBAL) -> torch.Tensor:
    """[B, R, S] coarse depths and weights -> [B, R, num] depths drawn where the coarse weights are high.

    The seed's recipe: bins are the S-1 midpoints between coarse depths, the pdf over their S-2 inner
    intervals is weights[1:-1] + 1e-5 (and sample_pdf adds its own 1e-5); no smoothing.
    """
    B, R, S = depths.shape
    w = weights.reshape(B * R, S) + 1e-5
    z = depths.reshape(B * R, S)
    mids = 0.5 * (z[:, 1:] + z[:, :-1])  # [B*R, S-1]
    fine = sample_pdf(mids, w[:, 1:-1], num, deterministic, draws)  # [B*R, num]
    return fine.detach().reshape(B, R, num)
