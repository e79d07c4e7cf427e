"""StyleGAN2 building blocks in plain PyTorch (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN"; ops follow StyleGAN2-ADA's reference formulas): equalized learning rate,
bias + activation, FIR up/down-sampling (upfirdn2d), modulated convolution, minibatch std.

These are the reference path: any fused kernel added later must match them numerically.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LRELU_GAIN = math.sqrt(2)


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, act: str = "linear", gain: Optional[float] = None,
             clamp: Optional[float] = None, dim: int = 1) -> torch.Tensor:
    """x + b (broadcast along `dim`), then activation, gain and optional clamp (StyleGAN2 bias_act)."""
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape)
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
        gain = LRELU_GAIN if gain is None else gain
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}")
    if gain is not None and gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def fir_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """Separable FIR low-pass filter, normalised to sum 1: [k, k]."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = f[:, None] * f[None, :]
    return f / f.sum()


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
    f = (f * gain).to(x.dtype).flip([0, 1])
    x = F.conv2d(x, f[None, None].repeat(C, 1, 1, 1), groups=C)  # depthwise FIR
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
    C = x.shape[1]
    w = (f * up ** 2).to(x.dtype)[None, None].repeat(C, 1, 1, 1)  # conv_transpose2d flips the kernel itself
    y = F.conv_transpose2d(x, w, stride=up, groups=C)  # [B, C, (H-1)*up + k, ...]
    lo, hi = k - 1 - p0, k - 1 - p1 - (up - 1)
    return y[:, :, lo: y.shape[2] - hi, lo: y.shape[3] - hi]


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """2x FIR downsampling: [B, C, H, W] -> [B, C, H/2, W/2]."""
    k = f.shape[0]
    p0, p1 = (k - down + 1) // 2, (k - down) // 2
    if not FAST_RESAMPLE:
        return upfirdn2d(x, f, down=down, pad=(p0, p1, p0, p1))
    # a strided depthwise conv computes only the outputs the reference keeps after filtering at full rate
    C = x.shape[1]
    w = f.to(x.dtype).flip([0, 1])[None, None].repeat(C, 1, 1, 1)
    return F.conv2d(F.pad(x, [p0, p1, p0, p1]), w, stride=down, groups=C)


class FullyConnected(nn.Module):
    """Equalized-learning-rate linear layer (weights scaled at run time by lr_multiplier / sqrt(fan_in))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., I] -> [..., O]
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        if self.activation == "linear" and b is not None:
            return F.linear(x, w, b)
        return bias_act(F.linear(x, w), b, self.activation, dim=-1)


# Modulated convs take the batched path unless this is False (see modulated_conv2d; docs/PERF.md).
BATCHED_MODCONV = True


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     padding: int = 0) -> torch.Tensor:
    """Per-sample modulated convolution (StyleGAN2 Sec. 2.2, eqs. 1-3).

    x [B, I, H, W], weight [O, I, k, k], styles [B, I] -> [B, O, H', W'].
    Reference: per-sample weights as one grouped conv. Batched path (StyleGAN2-ADA's fused_modconv=False):
    scale the input channels by the styles, one ordinary conv with the shared weights, scale the outputs by
    the demodulation coefficients -- the same sums, as one batched conv that CPU/GPU kernels run far better.
    """
    B, I, H, W = x.shape
    O, _, kh, kw = weight.shape
    if BATCHED_MODCONV:
        y = F.conv2d(x * styles[:, :, None, None], weight, padding=padding)  # [B, O, H', W']
        if demodulate:  # ||w * s||^2 per output channel = sum_i s_i^2 * sum_k w_oik^2
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).T + 1e-8).rsqrt()  # [B, O]
            y = y * dcoefs[:, :, None, None]
        return y
    w = weight[None] * styles[:, None, :, None, None]  # [B, O, I, k, k]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    x = F.conv2d(x.reshape(1, B * I, H, W), w.reshape(B * O, I, kh, kw), padding=padding, groups=B)
    return x.reshape(B, O, *x.shape[2:])


class ModulatedConv(nn.Module):
    """Conv whose weights are modulated per sample by an affine map of a code (w, or D's scale code).

    With up=2 the input is FIR-upsampled first, with down=2 the output is FIR-downsampled after:
    linear shift-invariant ops commute, so this is StyleGAN2's transposed-conv + blur up to borders.
    """

    def __init__(self, in_channels: int, out_channels: int, code_dim: int, kernel_size: int = 3, up: int = 1,
                 down: int = 1, activation: str = "lrelu", demodulate: bool = True, conv_clamp: Optional[float] = 256):
        super().__init__()
        self.up, self.down, self.activation, self.demodulate, self.conv_clamp = up, down, activation, demodulate, conv_clamp
        self.padding = kernel_size // 2
        self.affine = FullyConnected(code_dim, in_channels, bias_init=1)  # styles start at 1
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x: torch.Tensor, code: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        styles = self.affine(code)  # [B, I]
        weight = self.weight
        if not self.demodulate:  # equalized lr, folded into the styles (StyleGAN2 ToRGB)
            styles = styles / math.sqrt(weight[0].numel())
        if self.up > 1:
            x = upsample2d(x, self.resample_filter, self.up)
        x = modulated_conv2d(x, weight, styles, self.demodulate, self.padding)
        if self.down > 1:
            x = downsample2d(x, self.resample_filter, self.down)
        act_gain = (LRELU_GAIN if self.activation == "lrelu" else 1.0) * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, self.activation, gain=act_gain, clamp=clamp)


class Conv2d(nn.Module):
    """Equalized-learning-rate conv with optional FIR downsampling (StyleGAN2 D layers)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1, conv_clamp: Optional[float] = 256):
        super().__init__()
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.weight_gain, padding=self.padding)
        if self.down > 1:
            x = downsample2d(x, self.resample_filter, self.down)
        act_gain = (LRELU_GAIN if self.activation == "lrelu" else 1.0) * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, self.activation, gain=act_gain, clamp=clamp)


def mbstd_group_size(batch: int, group_size: int) -> int:
    """Samples per minibatch-std group; group j holds samples j, j + n, j + 2n, ... (n = batch / G)."""
    G = min(group_size, batch) if group_size else batch
    while batch % G:  # a ragged micro-batch still gets a valid grouping
        G -= 1
    return G


def minibatch_std(x: torch.Tensor, group_size: int, num_channels: int = 1) -> torch.Tensor:
    """Append the std over groups of samples as extra feature maps (ProGAN Sec. 3): [B, C, H, W] -> [B, C+F, H, W]."""
    B, C, H, W = x.shape
    G = mbstd_group_size(B, group_size)
    Fc = num_channels
    y = x.reshape(G, -1, Fc, C // Fc, H, W)  # [G, n, F, c, H, W]
    y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()  # [n, F, c, H, W]
    y = y.mean(dim=[2, 3, 4]).reshape(-1, Fc, 1, 1).repeat(G, 1, H, W)  # [B, F, H, W]
    return torch.cat([x, y], dim=1)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def fourier_features(x: torch.Tensor, num: int) -> torch.Tensor:
    """[B, K] in [0, 1] -> [B, K * num] sin/cos at octave frequencies (num/2 of them) per input."""
    freqs = 2.0 ** torch.arange(num // 2, device=x.device, dtype=x.dtype) * math.pi  # [num/2]
    angles = x[..., None] * freqs  # [B, K, num/2]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(1)  # [B, K*num]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur D inputs (EpiGRAF/EG3D blur fade-in); sigma in pixels, no-op at 0."""
    if sigma <= 0:
        return x
    r = int(np.ceil(sigma * 3))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    f = torch.exp(-0.5 * (t / sigma).square())
    f = f / f.sum()
    C = x.shape[1]
    x = F.conv2d(F.pad(x, [r, r, 0, 0], mode="reflect" if r < x.shape[3] else "replicate"),
                 f.view(1, 1, 1, -1).repeat(C, 1, 1, 1), groups=C)
    x = F.conv2d(F.pad(x, [0, 0, r, r], mode="reflect" if r < x.shape[2] else "replicate"),
                 f.view(1, 1, -1, 1).repeat(C, 1, 1, 1), groups=C)
    return x
