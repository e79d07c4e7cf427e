"""FIR filtering and resampling in plain PyTorch, with StyleGAN2-ADA's upfirdn2d semantics: the separable
low-pass, up/down-sampling (a strided fast path and the upfirdn2d reference), conv + resampling in the
reference's order, and the Gaussian blur of D's inputs."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def fir_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """Separable FIR low-pass filter, normalised to sum 1: [k, k]."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = f[:, None] * f[None, :]
    return f / f.sum()


class _FilterConv(torch.autograd.Function):
    """Depthwise conv of x [B, C, H, W] with a constant filter w [C, 1, k, k] (stride s, or its transpose),
    whose backward is the same op transposed, so it is differentiable to any order at the cost of one
    depthwise conv per order.

    Why not F.conv2d: PyTorch's generic double backward of a grouped conv runs one conv per group to build
    a filter gradient that a constant filter never needs. R1 differentiates D twice, and on an H200 those
    per-channel calls of D's FIR filters were 65% of an ffhq512 step's GPU time (docs/PERF.md). StyleGAN2-ADA's
    upfirdn2d op is written the same way (its gradient is upfirdn2d with the filter flipped).
    """

    @staticmethod
    def forward(ctx, x, w, stride: int, transpose: bool):
        ctx.save_for_backward(w)
        ctx.stride, ctx.transpose, ctx.in_hw = stride, transpose, x.shape[-2:]
        w = w.to(x.dtype)
        if not transpose:
            return F.conv2d(x, w, stride=stride, groups=x.shape[1])
        return F.conv_transpose2d(x, w, stride=stride, groups=x.shape[1])

    @staticmethod
    def backward(ctx, gy):
        (w,) = ctx.saved_tensors
        gx = _FilterConv.apply(gy, w, ctx.stride, not ctx.transpose)
        if not ctx.transpose:  # a strided conv ignores the input's last rows/columns when (H - k) % s != 0
            H, W = ctx.in_hw
            gx = F.pad(gx, [0, W - gx.shape[-1], 0, H - gx.shape[-2]])
        return gx, None, None, None


def filter_conv(x: torch.Tensor, f: torch.Tensor, stride: int = 1, transpose: bool = False) -> torch.Tensor:
    """Depthwise correlation of every channel of x [B, C, H, W] with one constant 2-D filter f [kh, kw] (no
    padding), strided, or its transpose (F.conv_transpose2d semantics): see _FilterConv."""
    return _FilterConv.apply(x, f[None, None].expand(x.shape[1], 1, *f.shape).contiguous(), stride, transpose)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0, 0, 0), gain: float = 1.0):
    """Upsample by zero insertion, pad, FIR-filter, downsample: [B, C, H, W] -> [B, C, H', W'].

    pad = (x0, x1, y0, y1); negative values crop. Same semantics as StyleGAN2-ADA's upfirdn2d.
    """
    B, C, H, W = x.shape
    if up > 1:
        x = x.reshape(B, C, H, 1, W, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(B, C, H * up, W * up)
    x0, x1, y0, y1 = pad
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    x = filter_conv(x, (f * gain).flip([0, 1]))  # depthwise FIR
    return x[:, :, ::down, ::down] if down > 1 else x


# Resampling takes a strided path unless this is False (kept switchable so `gan3d bench` and the tests
# compare it with the upfirdn2d reference in one process; docs/PERF.md has the measurement).
FAST_RESAMPLE = True


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """2x FIR upsampling: [B, C, H, W] -> [B, C, 2H, 2W]."""
    k = f.shape[0]
    p0, p1 = (k + up - 1) // 2, (k - up) // 2
    if not FAST_RESAMPLE:
        return upfirdn2d(x, f, up=up, pad=(p0, p1, p0, p1), gain=up ** 2)
    # A depthwise transposed conv with stride `up` is zero insertion + the (flipped) filter without
    # multiplying the inserted zeros: the same sums, a quarter of the work. Its implicit padding is
    # k - 1 - p on each side, so it is cropped back to upfirdn2d's (p0, p1) here.
    y = filter_conv(x, f * up ** 2, up, transpose=True)  # [B, C, (H-1)*up + k, ...]; it flips the kernel itself
    lo, hi = k - 1 - p0, k - 1 - p1 - (up - 1)
    return y[:, :, lo: y.shape[2] - hi, lo: y.shape[3] - hi]


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2, pad: int = 0) -> torch.Tensor:
    """FIR low-pass then keep every `down`-th sample: [B, C, H, W] -> [B, C, (H + 2 pad) / down, ...]."""
    k = f.shape[0]
    p0, p1 = pad + (k - down + 1) // 2, pad + (k - down) // 2
    if not FAST_RESAMPLE:
        return upfirdn2d(x, f, down=down, pad=(p0, p1, p0, p1))
    # a strided depthwise conv computes only the outputs the reference keeps after filtering at full rate
    return filter_conv(F.pad(x, [p0, p1, p0, p1]), f.flip([0, 1]), down)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, padding: int = 0,
                    groups: int = 1) -> torch.Tensor:
    """Conv with FIR up- or downsampling, in the order StyleGAN2-ADA's conv2d_resample uses (the order
    matters at the borders): x [B, I*groups, H, W], w [O*groups, I, k, k] (correlation, like F.conv2d).

    up=2: a stride-2 transposed conv (zero insertion, then *convolution* with w), then the FIR filter.
    down=2: the FIR filter with the conv's padding folded in, then a stride-2 conv; a 1x1 conv
    commutes with the filter, so it is filtered-and-decimated first (4x fewer products).
    """
    O, I, kh, kw = w.shape
    fk = f.shape[0]
    if up > 1:
        if groups == 1:
            wt = w.transpose(0, 1)  # [I, O, k, k]
        else:  # [G*O', I, k, k] -> [G*I, O', k, k]
            wt = w.reshape(groups, O // groups, I, kh, kw).transpose(1, 2).reshape(groups * I, O // groups, kh, kw)
        x = F.conv_transpose2d(x, wt, stride=up, groups=groups)  # [B, O, (H-1)*up + k, ...]
        p0 = padding + (fk + up - 1) // 2 - (kw - 1)
        p1 = padding + (fk - up) // 2 - (kw - up)
        return upfirdn2d(x, f, pad=(p0, p1, p0, p1), gain=up ** 2)
    if down > 1:
        if kw == 1:
            return F.conv2d(downsample2d(x, f, down, pad=padding), w, groups=groups)
        p0, p1 = padding + (fk - down + 1) // 2, padding + (fk - down) // 2
        return F.conv2d(upfirdn2d(x, f, pad=(p0, p1, p0, p1)), w, stride=down, groups=groups)
    return F.conv2d(x, w, padding=padding, groups=groups)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur D inputs (EpiGRAF's blur fade-in, from StyleGAN3's loss): taps 2^-(t/sigma)^2 for
    |t| <= floor(3 sigma), normalised, applied separably with zero padding; no-op below sigma 1/3."""
    r = int(np.floor(sigma * 3)) if sigma > 0 else 0
    if r <= 0:
        return x
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    f = torch.exp2(-(t / sigma).square())
    f = f / f.sum()
    x = filter_conv(F.pad(x, [r, r, 0, 0]), f[None, :])  # rows
    return filter_conv(F.pad(x, [0, 0, r, r]), f[:, None])  # columns
