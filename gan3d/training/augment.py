"""Adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with Limited Data"), as the
reference runs it: StyleGAN2-ADA's 'bgc' pipeline with the probabilities of the reference's
configs/training/base.yaml (x-flip 0: the data is mirrored instead), in plain PyTorch.

Geometric transforms (90-degree rotations, integer translation rounded to whole pixels, isotropic scale,
rotation, anisotropic scale, fractional translation) compose into one inverse affine map per sample, executed
as ADA does: reflection padding by the margin the map needs, 2x upsampling with the sym6 wavelet low-pass,
bilinear resampling, the matching 2x downsampling. The pipeline runs whenever a geometric transform is enabled,
even at p = 0 (then nearly, not exactly, the identity: ~1e-6), as the reference's does. Colour transforms
(brightness, contrast, luma flip, hue rotation, saturation) compose into one 4x4 matrix. Each transform fires
with probability multiplier x p per sample; p adapts so that E[sign(D(real))] -> target (training loop).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gan3d.draws import GLOBAL, Draws
from gan3d.nn.grid_sample_gradfix import grid_sample
from gan3d.nn.resample import filter_conv

# Low-pass filter of the sym6 wavelet (12 taps): ADA's filter for geometric resampling.
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633, 0.4910559419267466,
        0.787641141030194, 0.3379294217276218, -0.07263752278646252, -0.021060292512300564, 0.04472490177066578,
        0.0017677118642428036, -0.007800708325034148)


@dataclass(frozen=True)
class AugmentProbs:
    """Probability multipliers (x p) of each transform: the reference's configs/training/base.yaml."""
    xflip: float = 0.0
    rotate90: float = 1.0
    xint: float = 1.0
    scale: float = 1.0
    rotate: float = 1.0
    aniso: float = 1.0
    xfrac: float = 1.0
    brightness: float = 1.0
    contrast: float = 1.0
    lumaflip: float = 1.0
    hue: float = 1.0
    saturation: float = 1.0


# ADA's ranges (augment.py of StyleGAN2-ADA): fractions of the image, log2 stds, turns.
XINT_MAX, SCALE_STD, ROTATE_MAX, ANISO_STD, XFRAC_STD = 0.125, 0.2, 1.0, 0.2, 0.125
BRIGHTNESS_STD, CONTRAST_STD, HUE_MAX, SATURATION_STD = 0.2, 0.5, 1.0, 1.0


def _matrix(rows, like: torch.Tensor) -> torch.Tensor:
    """Stack rows of scalars / [B] tensors into [B, n, m] (scalars broadcast to like's shape)."""
    elems = [torch.as_tensor(v, dtype=torch.float32, device=like.device).expand(like.shape) for r in rows for v in r]
    return torch.stack(elems, -1).reshape(*like.shape, len(rows), -1)


def _translate2d(tx, ty, like):
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], like)


def _scale2d(sx, sy, like):
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], like)


def _rotate2d(theta, like):
    return _matrix([[torch.cos(theta), -torch.sin(theta), 0], [torch.sin(theta), torch.cos(theta), 0], [0, 0, 1]], like)


def geometric_inverse(B: int, W: int, H: int, p: torch.Tensor, probs: AugmentProbs, draws: Draws, device
                      ) -> torch.Tensor:
    """[B, 3, 3] inverse map (output pixel -> input pixel, in pixels about the centre) of the geometric transforms.
    Each transform draws its value, then its gate (value kept with probability multiplier x p)."""
    def gate(name, x, neutral, shape):
        return torch.where(draws.uniform(name, shape, device) < getattr(probs, name[4:-5]) * p, x,
                           torch.full_like(x, neutral))

    one = torch.zeros(B, device=device)
    G = torch.eye(3, device=device).expand(B, 3, 3)
    if probs.xflip > 0:
        i = gate("aug/xflip_gate", torch.floor(draws.uniform("aug/xflip", (B,), device) * 2), 0, (B,))
        G = G @ _scale2d(1 / (1 - 2 * i), 1, one)
    if probs.rotate90 > 0:
        i = gate("aug/rotate90_gate", torch.floor(draws.uniform("aug/rotate90", (B,), device) * 4), 0, (B,))
        G = G @ _rotate2d(math.pi / 2 * i, one)  # the inverse of a rotation by -pi/2 i
    if probs.xint > 0:
        t = (draws.uniform("aug/xint", (B, 2), device) * 2 - 1) * XINT_MAX
        t = gate("aug/xint_gate", t, 0, (B, 1))
        G = G @ _translate2d(-torch.round(t[:, 0] * W), -torch.round(t[:, 1] * H), one)  # whole pixels
    if probs.scale > 0:
        s = gate("aug/scale_gate", torch.exp2(draws.normal("aug/scale", (B,), device) * SCALE_STD), 1, (B,))
        G = G @ _scale2d(1 / s, 1 / s, one)
    p_rot = 1 - torch.sqrt((1 - probs.rotate * p).clamp(0, 1))  # P(pre or post rotation) = rotate x p
    for k in ("pre", "post"):
        if k == "post" and probs.aniso > 0:
            s = gate("aug/aniso_gate", torch.exp2(draws.normal("aug/aniso", (B,), device) * ANISO_STD), 1, (B,))
            G = G @ _scale2d(1 / s, s, one)
        if probs.rotate > 0:
            theta = (draws.uniform(f"aug/rotate_{k}", (B,), device) * 2 - 1) * math.pi * ROTATE_MAX
            keep = draws.uniform(f"aug/rotate_{k}_gate", (B,), device) < p_rot
            G = G @ _rotate2d(torch.where(keep, theta, torch.zeros_like(theta)), one)
    if probs.xfrac > 0:
        t = gate("aug/xfrac_gate", draws.normal("aug/xfrac", (B, 2), device) * XFRAC_STD, 0, (B, 1))
        G = G @ _translate2d(-t[:, 0] * W, -t[:, 1] * H, one)
    return G


def _upfirdn_sep(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0, 0, 0),
                 gain: float = 1.0, flip: bool = True) -> torch.Tensor:
    """StyleGAN2-ADA's upfirdn2d with a separable 1-D filter f [k] (rows, then columns): zero insertion, pad
    (negative crops), filter (a convolution, or with flip=False a correlation), keep every down-th sample."""
    B, C, H, W = x.shape
    if up > 1:
        x = F.pad(x.reshape(B, C, H, 1, W, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(B, C, H * up, W * up)
    x0, x1, y0, y1 = pad
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    f = f * gain ** 0.5
    f = f.flip(0) if flip else f
    x = filter_conv(filter_conv(x, f[None, :]), f[:, None])
    return x[:, :, ::down, ::down] if down > 1 else x


def augment(images: torch.Tensor, p: torch.Tensor, probs: AugmentProbs = AugmentProbs(),
            draws: Draws = GLOBAL) -> torch.Tensor:
    """The ADA pipeline at probability p: [B, 3, H, W] -> same shape (augment.py of StyleGAN2-ADA, 'bgc')."""
    B, C, H, W = images.shape
    device = images.device
    geometric = any(getattr(probs, k) > 0 for k in ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac"))
    x = images
    if geometric:
        G = geometric_inverse(B, W, H, p, probs, draws, device)
        f = torch.as_tensor(SYM6, dtype=torch.float32, device=device)
        f = f / f.sum()
        pad = len(SYM6) // 4
        # the margin (in pixels) the map reaches outside the image, plus the filter's support, per side
        cx, cy = (W - 1) / 2, (H - 1) / 2
        corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], device=device)
        cp = (G @ corners.t())[:, :2, :].permute(1, 0, 2).flatten(1)  # [2, B * 4]
        margin = torch.cat([-cp, cp]).max(dim=1).values  # [4] = x0, y0, x1, y1
        margin = margin + torch.tensor([pad * 2 - cx, pad * 2 - cy] * 2, device=device)
        margin = margin.max(torch.zeros(4, device=device)).min(torch.tensor([W - 1, H - 1] * 2, device=device))
        mx0, my0, mx1, my1 = (int(v) for v in margin.ceil().tolist())
        x = F.pad(x, [mx0, mx1, my0, my1], mode="reflect")
        one = torch.zeros(B, device=device)
        G = _translate2d((mx0 - mx1) / 2, (my0 - my1) / 2, one) @ G
        x = _upfirdn_sep(x, f, up=2, pad=(6, 5, 6, 5), gain=4)  # 2x, the sym6 filter's (k + up - 1) // 2 padding
        G = _scale2d(2, 2, one) @ G @ _scale2d(0.5, 0.5, one)
        G = _translate2d(-0.5, -0.5, one) @ G @ _translate2d(0.5, 0.5, one)
        shape = [B, C, (H + pad * 2) * 2, (W + pad * 2) * 2]
        G = _scale2d(2 / x.shape[3], 2 / x.shape[2], one) @ G @ _scale2d(shape[3] / 2, shape[2] / 2, one)
        grid = F.affine_grid(G[:, :2, :], shape, align_corners=False)
        x = grid_sample(x, grid, padding_mode="zeros", align_corners=False)  # R1 differentiates through it twice
        x = _upfirdn_sep(x, f, down=2, pad=(-pad * 2 + 5,) * 4, flip=False)  # back to H x W
    C4 = color_matrix(B, p, probs, draws, device)
    x = x.reshape(B, C, H * W)
    x = C4[:, :3, :3] @ x + C4[:, :3, 3:]  # [B, 3, H*W]
    return x.reshape(B, C, H, W)


def color_matrix(B: int, p: torch.Tensor, probs: AugmentProbs = AugmentProbs(), draws: Draws = GLOBAL,
                 device="cpu") -> torch.Tensor:
    """[B, 4, 4] affine colour transform (homogeneous RGB) of ADA's colour transforms."""
    def gate(name, x, neutral, shape):
        return torch.where(draws.uniform(name, shape, device) < getattr(probs, name[4:-5]) * p, x,
                           torch.full_like(x, neutral))

    I4 = torch.eye(4, device=device)
    C = I4.expand(B, 4, 4)
    one = torch.zeros(B, device=device)
    if probs.brightness > 0:
        b = gate("aug/brightness_gate", draws.normal("aug/brightness", (B,), device) * BRIGHTNESS_STD, 0, (B,))
        C = _matrix([[1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1]], one) @ C
    if probs.contrast > 0:
        c = gate("aug/contrast_gate", torch.exp2(draws.normal("aug/contrast", (B,), device) * CONTRAST_STD), 1, (B,))
        C = _matrix([[c, 0, 0, 0], [0, c, 0, 0], [0, 0, c, 0], [0, 0, 0, 1]], one) @ C
    v = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3)  # the luma axis
    vv = torch.outer(v, v)
    if probs.lumaflip > 0:
        i = gate("aug/lumaflip_gate", torch.floor(draws.uniform("aug/lumaflip", (B, 1, 1), device) * 2), 0, (B, 1, 1))
        C = (I4 - 2 * vv * i) @ C  # Householder reflection
    if probs.hue > 0:
        theta = (draws.uniform("aug/hue", (B,), device) * 2 - 1) * math.pi * HUE_MAX
        C = _rotate_about(v, gate("aug/hue_gate", theta, 0, (B,))) @ C
    if probs.saturation > 0:
        s = torch.exp2(draws.normal("aug/saturation", (B, 1, 1), device) * SATURATION_STD)
        C = (vv + (I4 - vv) * gate("aug/saturation_gate", s, 1, (B, 1, 1))) @ C
    return C


def _rotate_about(v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by theta [B] about the unit axis v[:3], as [B, 4, 4] (Rodrigues)."""
    vx, vy, vz = v[0], v[1], v[2]
    s, c = torch.sin(theta), torch.cos(theta)
    cc = 1 - c
    return _matrix([[vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
                    [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
                    [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
                    [0, 0, 0, 1]], theta)


class AdaStatistic:
    """ADA's r_t = E[sign(D(real))] over the steps since the last update, from every phase that scored reals
    (Dmain's and Dreg's alike, as the reference's collector of 'Loss/signs/real')."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def observe(self, step_stats: dict) -> None:
        for stats in step_stats.values():
            if "real_sign" in stats:
                self.total, self.count = self.total + stats["real_sign"], self.count + 1

    def take(self):
        """The mean since the last take (a 0-dim tensor or float), None without observations; starts over."""
        mean = self.total / self.count if self.count else None
        self.total, self.count = 0.0, 0
        return mean


class AugmentPipe(nn.Module):
    """Holds the augmentation probability p (a buffer, so it is checkpointed) and its adaptive update."""

    def __init__(self, kind: str, p: float, target: float, speed_kimg: float, probs: AugmentProbs = AugmentProbs()):
        super().__init__()
        self.kind, self.target, self.speed_kimg, self.probs = kind, target, speed_kimg, probs
        self.register_buffer("p", torch.tensor(float(p) if kind != "none" else 0.0))

    def forward(self, images: torch.Tensor, draws: Draws = GLOBAL) -> torch.Tensor:
        return augment(images, self.p, self.probs, draws) if self.kind != "none" else images

    def update(self, real_sign_mean: float, num_images: int) -> None:
        """ADA's heuristic (the reference's training_loop.py:373-376): p moves by num_images / (speed_kimg x 1000)
        towards E[sign(D(real))] = target; it is bounded below by 0 only, as there."""
        if self.kind != "ada":
            return
        step = np.sign(real_sign_mean - self.target) * num_images / (self.speed_kimg * 1000)
        self.p.copy_((self.p + step).clamp(min=0))
