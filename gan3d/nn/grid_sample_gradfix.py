"""Bilinear grid_sample with a double backward w.r.t. its input, for R1 through the ADA pipeline.

R1 (Mescheder et al. 2018) differentiates D(augment(x)) w.r.t. x with create_graph=True, so the backward of
grid_sample itself needs a backward. PyTorch's CUDA kernel has none ("derivative for
aten::grid_sampler_2d_backward is not implemented", seen with torch 2.11 on an H100). The operator is linear
in its input for a fixed grid, so the backward of its backward is grid_sample again: the approach of
StyleGAN2-ADA's torch_utils/ops/grid_sample_gradfix.py. Second-order terms w.r.t. the grid are not needed
(the grid comes from augmentation matrices, not parameters): a grid that requires grad takes PyTorch's op.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_PADDING = {"zeros": 0, "border": 1, "reflection": 2}
_BILINEAR = 0


def grid_sample(x: torch.Tensor, grid: torch.Tensor, padding_mode: str = "zeros",
                align_corners: bool = False) -> torch.Tensor:
    """Bilinear F.grid_sample: x [B, C, H, W], grid [B, Ho, Wo, 2] in [-1, 1] -> [B, C, Ho, Wo]."""
    if grid.requires_grad:
        return F.grid_sample(x, grid, "bilinear", padding_mode, align_corners)
    return _Forward.apply(x, grid, _PADDING[padding_mode], align_corners)


class _Forward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, grid, padding: int, align_corners: bool):
        ctx.save_for_backward(x, grid)
        ctx.padding, ctx.align_corners = padding, align_corners
        return torch.grid_sampler_2d(x, grid, _BILINEAR, padding, align_corners)

    @staticmethod
    def backward(ctx, grad_out):
        x, grid = ctx.saved_tensors
        grad_x = _Backward.apply(grad_out, x, grid, ctx.padding, ctx.align_corners)
        return grad_x, None, None, None


class _Backward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad_out, x, grid, padding: int, align_corners: bool):
        ctx.save_for_backward(grid)
        ctx.padding, ctx.align_corners = padding, align_corners
        grad_x, _ = torch.ops.aten.grid_sampler_2d_backward(grad_out, x, grid, _BILINEAR, padding, align_corners,
                                                            [True, False])
        return grad_x

    @staticmethod
    def backward(ctx, grad2_grad_x):
        (grid,) = ctx.saved_tensors
        # grad_x = A^T grad_out with A the (linear) sampling operator, so d<g2, grad_x>/d grad_out = A g2.
        grad2_grad_out = _Forward.apply(grad2_grad_x, grid, ctx.padding, ctx.align_corners)
        return grad2_grad_out, None, None, None, None
