"""Adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with Limited Data"), pure PyTorch.

The 'bgc' pipeline: geometric (x-flip, 90-degree rotations, integer translation, isotropic scale,
arbitrary rotation, anisotropic scale, fractional translation) composed into one affine map applied with
reflection padding, then colour (brightness, contrast, luma flip, hue rotation, saturation) as one 4x4
matrix. Each transform fires with probability p per sample; p adapts so that E[sign(D(real))] -> target.
Difference from ADA's reference: geometric resampling is bilinear grid_sample rather than ADA's
wavelet-filtered upsampling; the distributions and probabilities are ADA's.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gan3d.nn.grid_sample_gradfix import grid_sample

# ADA defaults (augment.py of StyleGAN2-ADA)
XINT_MAX, SCALE_STD, ROTATE_MAX, ANISO_STD, XFRAC_STD = 0.125, 0.2, 1.0, 0.2, 0.125
BRIGHTNESS_STD, CONTRAST_STD, HUE_MAX, SATURATION_STD = 0.2, 0.5, 1.0, 1.0


def _mat(rows, B, device) -> torch.Tensor:
    """Build [B, n, n] matrices from rows of scalars / [B] tensors."""
    return torch.stack([torch.stack([torch.as_tensor(v, dtype=torch.float32, device=device).expand(B) for v in r], -1)
                        for r in rows], -2)


def _translate2d(tx, ty, B, d):
    return _mat([[1, 0, tx], [0, 1, ty], [0, 0, 1]], B, d)


def _scale2d(sx, sy, B, d):
    return _mat([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], B, d)


def _rotate2d(theta, B, d):
    c, s = torch.cos(theta), torch.sin(theta)
    return _mat([[c, -s, 0], [s, c, 0], [0, 0, 1]], B, d)


def geometric_matrix(B: int, p: float, device) -> torch.Tensor:
    """[B, 3, 3] inverse map (output -> input coordinates in [-1, 1]) of the geometric ADA transforms."""
    def gate(x, neutral):  # keep x with probability p, else the identity value
        return torch.where(torch.rand(B, device=device) < p, x, torch.full_like(x, neutral))

    G = torch.eye(3, device=device).repeat(B, 1, 1)
    i = torch.floor(torch.rand(B, device=device) * 2)
    G = G @ _scale2d(1 - 2 * gate(i, 0), 1, B, device)  # x-flip
    i = torch.floor(torch.rand(B, device=device) * 4)
    G = G @ _rotate2d(-math.pi / 2 * gate(i, 0), B, device)  # rotate 90
    t = (torch.rand(B, 2, device=device) * 2 - 1) * XINT_MAX * (torch.rand(B, 1, device=device) < p)
    G = G @ _translate2d(-2 * t[:, 0], -2 * t[:, 1], B, device)  # translation (fraction of the image)
    s = 2 ** (torch.randn(B, device=device) * SCALE_STD)
    s = gate(s, 1)
    G = G @ _scale2d(1 / s, 1 / s, B, device)  # isotropic scale
    p_rot = 1 - math.sqrt(max(1 - p, 0))  # applied twice (before and after aniso)
    for k in range(2):
        theta = (torch.rand(B, device=device) * 2 - 1) * math.pi * ROTATE_MAX
        theta = torch.where(torch.rand(B, device=device) < p_rot, theta, torch.zeros_like(theta))
        G = G @ _rotate2d(-theta, B, device)
        if k == 0:
            s = gate(2 ** (torch.randn(B, device=device) * ANISO_STD), 1)
            G = G @ _scale2d(1 / s, s, B, device)  # anisotropic scale
    t = torch.randn(B, 2, device=device) * XFRAC_STD * (torch.rand(B, 1, device=device) < p)
    G = G @ _translate2d(-2 * t[:, 0], -2 * t[:, 1], B, device)  # fractional translation
    return G


def color_matrix(B: int, p: float, device) -> torch.Tensor:
    """[B, 4, 4] affine colour transform (homogeneous RGB) of ADA's colour transforms."""
    def gate(x, neutral):
        return torch.where(torch.rand(B, device=device) < p, x, torch.full_like(x, neutral))

    I4 = torch.eye(4, device=device)
    C = I4.repeat(B, 1, 1)
    b = gate(torch.randn(B, device=device) * BRIGHTNESS_STD, 0)
    T = I4.repeat(B, 1, 1)
    T[:, :3, 3] = b[:, None]
    C = T @ C  # brightness
    c = gate(2 ** (torch.randn(B, device=device) * CONTRAST_STD), 1)
    S = I4.repeat(B, 1, 1)
    S[:, 0, 0] = S[:, 1, 1] = S[:, 2, 2] = c
    C = S @ C  # contrast
    v = torch.tensor([1, 1, 1, 0], dtype=torch.float32, device=device) / math.sqrt(3)
    vv = torch.outer(v, v)
    i = gate(torch.floor(torch.rand(B, device=device) * 2), 0)
    C = (I4 - 2 * vv * i[:, None, None]) @ C  # luma flip
    theta = gate((torch.rand(B, device=device) * 2 - 1) * math.pi * HUE_MAX, 0)
    C = _rotate_about_luma(theta, device) @ C  # hue rotation
    s = gate(2 ** (torch.randn(B, device=device) * SATURATION_STD), 1)
    C = (vv + (I4 - vv) * s[:, None, None]) @ C  # saturation
    return C


def _rotate_about_luma(theta: torch.Tensor, device) -> torch.Tensor:
    """Rodrigues rotation about the (1,1,1)/sqrt(3) axis, as [B, 4, 4]."""
    B = theta.shape[0]
    a = torch.ones(3, device=device) / math.sqrt(3)
    K = torch.tensor([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]], device=device)
    R = torch.eye(3, device=device) + torch.sin(theta)[:, None, None] * K + (1 - torch.cos(theta))[:, None, None] * (K @ K)
    M = torch.eye(4, device=device).repeat(B, 1, 1)
    M[:, :3, :3] = R
    return M


def augment(images: torch.Tensor, p: float) -> torch.Tensor:
    """Apply the ADA pipeline with probability p per transform: [B, 3, H, W] in [-1, 1] -> same shape."""
    if p <= 0:
        return images
    B, C, H, W = images.shape
    G = geometric_matrix(B, p, images.device)
    grid = F.affine_grid(G[:, :2, :], [B, C, H, W], align_corners=False)
    x = grid_sample(images, grid, padding_mode="reflection", align_corners=False)  # R1 differentiates through it twice
    M = color_matrix(B, p, images.device)
    x = x.reshape(B, C, H * W)
    x = M[:, :3, :3] @ x + M[:, :3, 3:]  # [B, 3, H*W]
    return x.reshape(B, C, H, W)


class AugmentPipe(nn.Module):
    """Holds the augmentation probability p (a buffer, so it is checkpointed) and its adaptive update."""

    def __init__(self, kind: str, p: float, target: float, speed_kimg: float):
        super().__init__()
        self.kind, self.target, self.speed_kimg = kind, target, speed_kimg
        self.register_buffer("p", torch.tensor(float(p) if kind != "none" else 0.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return augment(images, float(self.p)) if self.kind != "none" else images

    def update(self, real_sign_mean: float, num_images: int) -> None:
        """ADA heuristic r_t = E[sign(D(real))]: p moves by num_images / (speed_kimg * 1000) towards the target."""
        if self.kind != "ada":
            return
        step = np.sign(real_sign_mean - self.target) * num_images / (self.speed_kimg * 1000)
        self.p.copy_((self.p + step).clamp(0, 1))
