"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, ProGAN Sec. 5 and
its sliced_wasserstein.py). Needs no pretrained weights, so it always works, offline and on CPU.

Per pyramid level: 128 random 7x7 neighbourhoods per image, normalised per colour channel over both
sets, compared with 512 random projections (4 repeats x 128); reported x 1e3, and averaged over levels.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_GAUSS = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(x: torch.Tensor) -> torch.Tensor:
    C = x.shape[1]
    k = _GAUSS.to(x)
    x = F.conv2d(F.pad(x, [2, 2, 0, 0], mode="reflect"), k.view(1, 1, 1, 5).repeat(C, 1, 1, 1), groups=C)
    return F.conv2d(F.pad(x, [0, 0, 2, 2], mode="reflect"), k.view(1, 1, 5, 1).repeat(C, 1, 1, 1), groups=C)


def laplacian_pyramid(images: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """[N, C, H, W] -> band-pass levels, finest first; the last level is the low-pass residual."""
    levels, x = [], images
    for _ in range(num_levels - 1):
        down = _blur(x)[:, :, ::2, ::2]
        up = torch.zeros_like(x)
        up[:, :, ::2, ::2] = down * 4  # zero-insert then blur = bilinear-like expand
        levels.append(x - _blur(up))
        x = down
    levels.append(x)
    return levels


def positions(N: int, H: int, W: int, per_image: int, size: int, rng: np.random.Generator):
    """Top-left corners of random neighbourhoods: ys, xs [N, per_image]."""
    return (torch.as_tensor(rng.integers(0, H - size + 1, size=(N, per_image))),
            torch.as_tensor(rng.integers(0, W - size + 1, size=(N, per_image))))


def descriptors(level: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, size: int) -> torch.Tensor:
    """size x size neighbourhoods at (ys, xs): [N, C, H, W] -> [N * per_image, C * size * size]."""
    N, C, H, W = level.shape
    per_image = ys.shape[1]
    off = torch.arange(size)
    rows = (ys[..., None] + off)[..., :, None].expand(N, per_image, size, size)  # [N, P, s, s]
    cols = (xs[..., None] + off)[..., None, :].expand(N, per_image, size, size)
    n = torch.arange(N)[:, None, None, None].expand_as(rows)
    patches = level.permute(0, 2, 3, 1)[n, rows, cols]  # [N, P, s, s, C]
    return patches.permute(0, 1, 4, 2, 3).reshape(N * per_image, C * size * size)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, repeats: int, dirs: int, rng: np.random.Generator) -> float:
    """Mean over random unit projections of the 1-D Wasserstein-1 distance between equal-size sets."""
    out = []
    for _ in range(repeats):
        d = torch.as_tensor(rng.standard_normal((a.shape[1], dirs)), dtype=a.dtype)
        d = d / d.norm(dim=0, keepdim=True)
        pa, _ = torch.sort(a @ d, dim=0)
        pb, _ = torch.sort(b @ d, dim=0)
        out.append((pa - pb).abs().mean().item())
    return float(np.mean(out))


def swd(reals: torch.Tensor, fakes: torch.Tensor, seed: int = 0, per_image: int = 128, size: int = 7,
        repeats: int = 4, dirs: int = 128, min_resolution: int = 16) -> dict[str, float]:
    """reals, fakes: [N, 3, H, W] uint8 or float in [-1, 1]; same N. Returns {'swd': mean, 'swd/<res>': ...} x 1e3."""
    if reals.shape[0] != fakes.shape[0]:
        n = min(reals.shape[0], fakes.shape[0])
        reals, fakes = reals[:n], fakes[:n]
    to_float = lambda x: x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x.float()  # noqa: E731
    reals, fakes = to_float(reals), to_float(fakes)
    res = reals.shape[-1]
    num_levels = max(1, int(np.log2(res // min_resolution)) + 1)
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    for i, (lr, lf) in enumerate(zip(laplacian_pyramid(reals, num_levels), laplacian_pyramid(fakes, num_levels))):
        s = min(size, lr.shape[-1])
        # the same positions in both sets: identical sets give exactly 0, and sampling noise cancels
        ys, xs = positions(lr.shape[0], lr.shape[2], lr.shape[3], per_image, s, rng)
        da, db = descriptors(lr, ys, xs, s), descriptors(lf, ys, xs, s)
        C = lr.shape[1]
        both = torch.cat([da, db]).reshape(-1, C, s * s)  # normalise each colour channel over both sets
        mean, std = both.mean(dim=[0, 2], keepdim=True), both.std(dim=[0, 2], keepdim=True) + 1e-8
        da = ((da.reshape(-1, C, s * s) - mean) / std).flatten(1)
        db = ((db.reshape(-1, C, s * s) - mean) / std).flatten(1)
        out[f"swd/{res >> i}"] = sliced_wasserstein(da, db, repeats, dirs, rng) * 1e3
    out["swd"] = float(np.mean(list(out.values())))
    return out
