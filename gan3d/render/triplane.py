"""Tri-plane feature lookup (EG3D / EpiGRAF): bilinear features from the xy, xz and yz planes, averaged."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_triplane(planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """planes [B, 3, C, H, W] (xy, xz, yz), points [B, N, 3] in [-1, 1]^3 -> features [B, N, C].

    As the seed: the first coordinate indexes width, the second height (-1 = row 0), plane texels sit
    on the cube's borders (align_corners=True), and points outside the cube read zeros.
    """
    B, _, C, H, W = planes.shape
    N = points.shape[1]
    x, y, z = points.unbind(-1)
    coords = torch.stack([torch.stack([x, y], -1), torch.stack([x, z], -1), torch.stack([y, z], -1)], 1)  # [B, 3, N, 2]
    feats = F.grid_sample(planes.reshape(B * 3, C, H, W), coords.reshape(B * 3, 1, N, 2),
                          mode="bilinear", padding_mode="zeros", align_corners=True)  # [B*3, C, 1, N]
    return feats.reshape(B, 3, C, N).mean(1).transpose(1, 2)  # [B, N, C]
