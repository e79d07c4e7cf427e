"""Cameras in the seed's convention (DESIGN.md "Conventions").

Angles are [yaw, pitch, roll] in radians. The camera sits at
    origin = r * (sin p * cos y, cos p, sin p * sin y)
and looks at the world origin with world up +y; camera space is OpenGL-like (x right, y up,
looking down -z). Roll rotates the camera about its viewing axis (roll = 0 is the seed's matrix).
"""
from __future__ import annotations

import math

import torch

from gan3d.config import CameraConfig
from gan3d.draws import Draws

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


def wrap_yaw(angles: torch.Tensor) -> torch.Tensor:
    """The same cameras with yaw in [-pi, pi) (what a dataset.json holds); pitch and roll unchanged."""
    out = angles.clone()
    out[:, 0] = torch.remainder(out[:, 0] + math.pi, 2 * math.pi) - math.pi
    return out


def sample_camera_angles(n: int, cfg: CameraConfig, draws: Draws, device="cpu") -> torch.Tensor:
    """Draw [n, 3] camera angles from the distribution `cfg.dist`, with the reference's formulas (its
    rendering.py `sample_camera_angles`): yaw is not wrapped, pitch is clamped to [1e-5, pi - 1e-5], roll 0.
    'spherical_uniform' is uniform in yaw and in v = (1 - cos pitch) / 2 over (pitch_mean -+ pitch_std) / pi, so
    equal-area exactly when that interval is [0, 1]; 'hybrid' picks uniform or gaussian for the whole batch."""
    mean = torch.tensor([cfg.yaw_mean, cfg.pitch_mean], device=device)
    std = torch.tensor([cfg.yaw_std, cfg.pitch_std], device=device)
    dist = cfg.dist
    if dist == "uniform":
        yp = mean + (draws.uniform("camera_u", (n, 2), device) - 0.5) * 2 * std
    elif dist == "normal":
        yp = mean + draws.normal("camera_n", (n, 2), device) * std
    elif dist == "truncated_gaussian":  # the first of 4 normal draws inside (-2, 2) (the first if none is)
        x = draws.normal("camera_n4", (n, 2, 4), device)
        first = ((x < 2) & (x > -2)).max(-1, keepdim=True)[1]  # [n, 2, 1]
        yp = mean + x.gather(-1, first)[..., 0] * std
    elif dist == "hybrid":  # pi-GAN: the whole batch uniform over twice the std, or gaussian
        if draws.uniform("camera_hybrid_u", (1,)).item() < 0.5:
            yp = mean + (draws.uniform("camera_u", (n, 2), device) - 0.5) * 2 * std * 2
        else:
            yp = mean + draws.normal("camera_n", (n, 2), device) * std
    elif dist == "spherical_uniform":
        u = draws.uniform("camera_u", (n, 2), device)
        yaw = (u[:, 0] - 0.5) * 2 * cfg.yaw_std + cfg.yaw_mean
        v = ((u[:, 1] - 0.5) * 2 * cfg.pitch_std / math.pi + cfg.pitch_mean / math.pi).clamp(1e-5, 1 - 1e-5)
        yp = torch.stack([yaw, torch.arccos(1 - 2 * v)], dim=-1)
    else:
        raise ValueError(f"camera dist {dist!r} draws no cameras (expected one of uniform, normal, "
                         f"truncated_gaussian, hybrid, spherical_uniform)")
    yp = torch.stack([yp[:, 0], yp[:, 1].clamp(_EPS, math.pi - _EPS)], dim=-1)
    return torch.cat([yp, torch.zeros(n, 1, device=device)], dim=-1)  # roll 0
