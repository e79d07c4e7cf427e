"""Volume integration along rays (NeRF quadrature, pi-GAN/EpiGRAF softplus density)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gan3d.draws import GLOBAL, Draws


def integrate(rgb: torch.Tensor, sigma: torch.Tensor, depths: torch.Tensor, noise_std: float = 0.0,
              last_delta: float = 1e10, draws: Draws = GLOBAL, noise_name: str = "density_noise"
              ) -> dict[str, torch.Tensor]:
    """Composite S samples per ray.

    rgb [B, R, S, 3] (raw colour), raw density sigma [B, R, S, 1], sorted depths [B, R, S].
    Returns rgb [B, R, 3], depth [B, R, 1] (the weighted sum of depths), opacity [B, R, 1] (sum of weights),
    weights [B, R, S] and final_transmittance [B, R, 1] (the transmittance in front of the last sample).
    The last sample's interval is `last_delta`: the seed uses 1e10 without a background model, so every ray
    ends opaque, and 1e-3 with one, whose colour is then added times final_transmittance.
    """
    deltas = depths[..., 1:] - depths[..., :-1]  # [B, R, S-1]
    deltas = torch.cat([deltas, torch.full_like(deltas[..., :1], last_delta)], dim=-1).unsqueeze(-1)  # [B, R, S, 1]
    if noise_std > 0:  # density noise regularises early training (EpiGRAF, decays to 0)
        sigma = sigma + noise_std * draws.normal(noise_name, sigma.shape, sigma.device)
    density = F.softplus(sigma)
    alpha = 1 - torch.exp(-density * deltas)  # [B, R, S, 1]
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1, :]), 1 - alpha + 1e-10], dim=-2), dim=-2)
    trans = trans[..., :-1, :]  # [B, R, S, 1]: light reaching each sample
    weights = alpha * trans  # [B, R, S, 1]
    return {"rgb": (weights * rgb).sum(-2),  # [B, R, 3]
            "depth": (weights[..., 0] * depths).sum(-1, keepdim=True),  # [B, R, 1]
            "opacity": weights.sum(-2),  # [B, R, 1]
            "weights": weights[..., 0],  # [B, R, S]
            "final_transmittance": trans[..., -1, :]}  # [B, R, 1]
