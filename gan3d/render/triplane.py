"""Tri-plane feature lookup (EG3D / EpiGRAF): bilinear features from the xy, xz and yz planes, averaged."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

LEAN = True  # lookups keep only the sample positions for backward (gan3d.nn.lean.use switches it)


def sample_triplane(planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """planes [B, 3, C, H, W] (xy, xz, yz), points [B, N, 3] in [-1, 1]^3 -> features [B, N, C].

    As the seed: the first coordinate indexes width, the second height (-1 = row 0), plane texels sit
    on the cube's borders (align_corners=True), and points outside the cube read zeros.
    """
    B, _, C, H, W = planes.shape
    N = points.shape[1]
    x, y, z = points.unbind(-1)
    coords = torch.stack([torch.stack([x, y], -1), torch.stack([x, z], -1), torch.stack([y, z], -1)], 1)  # [B, 3, N, 2]
    feats = grid_sample_planes(planes.reshape(B * 3, C, H, W), coords.reshape(B * 3, 1, N, 2))  # [B*3, C, 1, N]
    return feats.reshape(B, 3, C, N).mean(1).transpose(1, 2)  # [B, N, C]


class _PlaneSample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, planes, grid, align_corners: bool):
        ctx.save_for_backward(grid)
        ctx.shape, ctx.align_corners = planes.shape, align_corners
        return torch.grid_sampler_2d(planes, grid, 0, 0, align_corners)  # bilinear, zeros

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (grid,) = ctx.saved_tensors
        # linear in the planes: the input is read only for the grid's gradient, which is not asked for
        stand_in = torch.zeros((), dtype=g.dtype, device=g.device).expand(ctx.shape)
        g_planes, _ = torch.ops.aten.grid_sampler_2d_backward(g, stand_in, grid, 0, 0, ctx.align_corners,
                                                              [True, False])
        return g_planes, None, None


def grid_sample_planes(planes: torch.Tensor, grid: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
    """Bilinear F.grid_sample with zero padding that does not keep `planes` for backward (when `grid` needs no
    gradient)."""
    if not LEAN or grid.requires_grad or not torch.is_grad_enabled() or not planes.requires_grad:
        return F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)
    return _PlaneSample.apply(planes, grid, align_corners)
