"""Volume integration along rays (NeRF quadrature, pi-GAN/EpiGRAF softplus density)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def integrate(rgb: torch.Tensor, sigma: torch.Tensor, depths: torch.Tensor, noise_std: float = 0.0,
              generator: Optional[torch.Generator] = None) -> dict[str, torch.Tensor]:
    """Composite S samples per ray.

    rgb [B, R, S, 3] in [0, 1], raw density sigma [B, R, S, 1], sorted depths [B, R, S].
    Returns rgb [B, R, 3], depth [B, R, 1], opacity [B, R, 1] (= sum of weights <= 1), weights [B, R, S].
    The last sample gets the previous interval's length, so a ray through empty space stays
    transparent and the background (or white) shows through its residual transmittance 1 - opacity.
    """
    deltas = depths[..., 1:] - depths[..., :-1]  # [B, R, S-1]
    deltas = torch.cat([deltas, deltas[..., -1:]], dim=-1).unsqueeze(-1)  # [B, R, S, 1]
    if noise_std > 0:  # density noise regularises early training (EpiGRAF, decays to 0)
        sigma = sigma + noise_std * torch.randn(sigma.shape, generator=generator).to(sigma.device)
    density = F.softplus(sigma)
    alpha = 1 - torch.exp(-density * deltas)  # [B, R, S, 1]
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1, :]), 1 - alpha + 1e-10], dim=-2), dim=-2)
    weights = alpha * trans[..., :-1, :]  # [B, R, S, 1]
    opacity = weights.sum(-2)  # [B, R, 1]
    out_rgb = (weights * rgb).sum(-2)  # [B, R, 3]
    depth = (weights[..., 0] * depths).sum(-1, keepdim=True) / opacity.clamp(min=1e-8)
    depth = torch.nan_to_num(depth).clamp(depths.min(), depths.max())
    return {"rgb": out_rgb, "depth": depth, "opacity": opacity, "weights": weights[..., 0]}
