"""Dataset camera poses: the x-flip of an image as a camera reflection, and a dataset's centre yaw."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np


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
