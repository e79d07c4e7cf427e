"""Cameras in the seed's convention (DESIGN.md "Conventions").

Angles are [yaw, pitch, roll] in radians. The camera sits at
    origin = r * (sin p * cos y, cos p, sin p * sin y)
and looks at the world origin with world up +y; camera space is OpenGL-like (x right, y up,
looking down -z). Roll rotates the camera about its viewing axis (roll = 0 is the seed's matrix).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from gan3d.config import CameraConfig

_EPS = 1e-5


def camera_origins(angles: torch.Tensor, radius: float | torch.Tensor) -> torch.Tensor:
    """[B, 3] angles -> [B, 3] camera positions on the sphere of `radius`."""
    yaw, pitch = angles[:, 0], angles[:, 1].clamp(_EPS, math.pi - _EPS)
    return radius * torch.stack([torch.sin(pitch) * torch.cos(yaw), torch.cos(pitch),
                                 torch.sin(pitch) * torch.sin(yaw)], dim=-1)


def cam2world_matrix(angles: torch.Tensor, radius: float | torch.Tensor = 1.0) -> torch.Tensor:
    """[B, 3] (yaw, pitch, roll) -> [B, 4, 4] camera-to-world; columns: right, up, back, origin."""
    origin = camera_origins(angles, radius)  # [B, 3]
    forward = torch.nn.functional.normalize(-origin, dim=-1)  # looks at the origin
    world_up = torch.tensor([0.0, 1.0, 0.0], device=angles.device, dtype=angles.dtype).expand_as(forward)
    left = torch.nn.functional.normalize(torch.linalg.cross(world_up, forward, dim=-1), dim=-1)
    up = torch.nn.functional.normalize(torch.linalg.cross(forward, left, dim=-1), dim=-1)
    right = -left
    roll = angles[:, 2:3]  # [B, 1]
    right, up = (torch.cos(roll) * right + torch.sin(roll) * up,
                 -torch.sin(roll) * right + torch.cos(roll) * up)
    m = torch.eye(4, device=angles.device, dtype=angles.dtype).repeat(len(angles), 1, 1)  # [B, 4, 4]
    m[:, :3, 0], m[:, :3, 1], m[:, :3, 2], m[:, :3, 3] = right, up, -forward, origin
    return m


def angles_from_cam2world(c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `cam2world_matrix` for cameras looking at the origin: [B, 4, 4] -> ([B, 3] angles, [B] radius)."""
    origin = c2w[:, :3, 3]
    radius = origin.norm(dim=-1)
    o = origin / radius[:, None]
    pitch = torch.acos(o[:, 1].clamp(-1, 1))
    yaw = torch.atan2(o[:, 2], o[:, 0])
    # roll: angle of the camera's up axis against the roll-free up of the same position
    roll_free = cam2world_matrix(torch.stack([yaw, pitch, torch.zeros_like(yaw)], -1), radius[:, None])
    up, right0, up0 = c2w[:, :3, 1], roll_free[:, :3, 0], roll_free[:, :3, 1]
    roll = torch.atan2(-(up * right0).sum(-1), (up * up0).sum(-1))
    return torch.stack([yaw, pitch, roll], dim=-1), radius


def camera_cond_scalars(angles: torch.Tensor) -> torch.Tensor:
    """[B, 3] (yaw, pitch, roll) -> [B, 2]: yaw and pitch as signed fractions of a full turn, what the seed's
    mapping networks are conditioned on (roll is never used)."""
    yp = angles[:, :2]
    return yp.sign() * (yp.abs() % (2 * math.pi)) / (2 * math.pi)


def sample_camera_angles(n: int, cfg: CameraConfig, generator: Optional[torch.Generator] = None,
                         dataset_angles: Optional[torch.Tensor] = None, device="cpu") -> torch.Tensor:
    """Draw [n, 3] camera angles from the distribution `cfg.dist` (pi-GAN / EpiGRAF samplers)."""
    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(device)

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    def trunc(*shape):  # N(0, 1) truncated at +-2 by resampling
        x = randn(*shape)
        while (bad := x.abs() > 2).any():
            x = torch.where(bad, randn(*shape), x)
        return x

    mean = torch.tensor([cfg.yaw_mean, cfg.pitch_mean], device=device)
    std = torch.tensor([cfg.yaw_std, cfg.pitch_std], device=device)
    dist = cfg.dist
    if dist == "dataset":
        if dataset_angles is None or len(dataset_angles) == 0:
            raise ValueError("camera dist 'dataset' needs a dataset with camera_angles")
        idx = torch.randint(len(dataset_angles), (n,), generator=generator)
        return dataset_angles[idx].to(device)
    if dist == "uniform":
        yp = mean + (rand(n, 2) * 2 - 1) * std
    elif dist == "normal":
        yp = mean + randn(n, 2) * std
    elif dist == "truncated_gaussian":
        yp = mean + trunc(n, 2) * std
    elif dist == "hybrid":  # pi-GAN: half the batch uniform, half gaussian
        uni = mean + (rand(n, 2) * 2 - 1) * std
        gau = mean + randn(n, 2) * std
        yp = torch.where(rand(n, 1) < 0.5, uni, gau)
    elif dist == "spherical_uniform":  # uniform in yaw and in cos(pitch): equal area on the sphere band
        yaw = cfg.yaw_mean + (rand(n) * 2 - 1) * cfg.yaw_std
        lo = max(cfg.pitch_mean - cfg.pitch_std, 0.0)
        hi = min(cfg.pitch_mean + cfg.pitch_std, math.pi)
        cos = math.cos(lo) + rand(n) * (math.cos(hi) - math.cos(lo))
        yp = torch.stack([yaw, torch.acos(cos.clamp(-1, 1))], dim=-1)
    else:
        raise ValueError(f"unknown camera dist {dist!r}")
    yp[:, 0] = torch.remainder(yp[:, 0] + math.pi, 2 * math.pi) - math.pi  # yaw wrapped to [-pi, pi)
    yp[:, 1] = yp[:, 1].clamp(_EPS, math.pi - _EPS)
    return torch.cat([yp, torch.zeros(n, 1, device=device)], dim=-1)  # roll 0
