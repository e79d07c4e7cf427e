"""Dataset camera poses: the x-flip of an image as a camera reflection, a dataset's centre yaw, and the point
imported cameras look at."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch


def mirror_angles(angles: np.ndarray, yaw_center: float) -> np.ndarray:
    """x-flip of the image = reflection of the world through the plane of the centre view:
    yaw -> 2 * centre - yaw (wrapped to [-pi, pi]), roll -> -roll, pitch unchanged."""
    out = np.array(angles, dtype=np.float32, copy=True)
    out[..., 0] = (2 * yaw_center - out[..., 0] + math.pi) % (2 * math.pi) - math.pi
    out[..., 2] = -out[..., 2]
    return out


def yaw_center_of(angles: Optional[np.ndarray]) -> float:
    """The dataset's centre yaw: the circular mean of its yaws snapped to a multiple of pi/2
    (GRAM-style poses centre on pi/2 in this convention, some tools on 0)."""
    if angles is None or len(angles) == 0:
        return math.pi / 2
    mean = math.atan2(np.sin(angles[:, 0]).mean(), np.cos(angles[:, 0]).mean())
    return round(mean / (math.pi / 2)) * (math.pi / 2)


def common_lookat(origins: torch.Tensor, forward: torch.Tensor, iters: int = 30) -> torch.Tensor:
    """The point nearest to every optical axis: origins, unit forward [N, 3] -> [3].

    Least squares sum_i w_i |(I - d_i d_i^T)(p - o_i)|^2, i.e. sum_i w_i P_i p = sum_i w_i P_i o_i, reweighted
    by 1 / distance (IRLS towards the L1 solution) so that a few stray cameras do not pull the point away
    from the one the others share."""
    P = torch.eye(3, dtype=origins.dtype) - forward[:, :, None] * forward[:, None, :]  # [N, 3, 3]
    w = torch.ones(len(origins), dtype=origins.dtype)
    floor = 1e-9 * origins.norm(dim=-1).mean()
    for _ in range(iters):
        Pw = P * w[:, None, None]
        p = torch.linalg.lstsq(Pw.sum(0), (Pw @ origins[:, :, None]).sum(0)).solution[:, 0]
        w = 1 / (P @ (p - origins)[:, :, None]).norm(dim=(1, 2)).clamp(min=floor)
    return p
