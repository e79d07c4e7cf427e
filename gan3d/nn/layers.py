"""StyleGAN2 building blocks in plain PyTorch (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN"; ops follow StyleGAN2-ADA's reference formulas): equalized learning rate,
bias + activation, modulated convolution, minibatch std (FIR resampling: gan3d.nn.resample).

These are the reference path: any fused kernel added later must match them numerically.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from gan3d.nn import lean
from gan3d.nn.resample import conv2d_resample, fir_filter

LRELU_GAIN = math.sqrt(2)

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "reference": torch.float32, "bf16": torch.bfloat16}


def conv_precision(dtype: torch.dtype, device: torch.device):
    """Autocast for a conv stack at `dtype` (a no-op at fp32). bf16 keeps fp32's exponent range, so unlike
    StyleGAN2-ADA's fp16 blocks it needs no loss scaling; conv_clamp (256) still bounds activations."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, act: str = "linear", gain: Optional[float] = None,
             clamp: Optional[float] = None, dim: int = 1) -> torch.Tensor:
    """x + b (broadcast along `dim`), then activation, gain and optional clamp (StyleGAN2 bias_act)."""
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape)
    if lean.active() and act in ("lrelu", "linear") and (act == "lrelu" or clamp):
        g = (LRELU_GAIN if act == "lrelu" else 1.0) if gain is None else gain
        return lean.act(x, 0.2 if act == "lrelu" else 1.0, g, clamp)  # keeps its output only
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


class FullyConnected(nn.Module):
    """Equalized-learning-rate linear layer (weights scaled at run time by lr_multiplier / sqrt(fan_in)).

    Parameters are stored as StyleGAN2-ADA stores them (weight = randn / lr_mult, bias = init / lr_mult;
    run-time weight = stored * lr_mult / sqrt(fan_in), bias = stored * lr_mult), so reference tensors load as they are.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init) / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., I] -> [..., O]
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        if self.activation == "linear" and b is not None:
            return F.linear(x, w, b)
        if self.activation == "lrelu" and b is not None:
            # lrelu(y) * gain = lrelu(gain * y) for gain > 0: folding the gain into the (small) weight and bias makes
            # the bias part of the matmul (addmm) and saves two passes over the activations, forward and backward
            y = F.linear(x, w * LRELU_GAIN, b * LRELU_GAIN)
            return lean.act(y) if lean.active() else F.leaky_relu(y, 0.2)
        return bias_act(F.linear(x, w), b, self.activation, dim=-1)


# Modulated convs take the batched path unless this is False (see modulated_conv2d; docs/PERF.md).
BATCHED_MODCONV = True


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, f: torch.Tensor, demodulate: bool = True,
                     padding: int = 0, up: int = 1, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample modulated convolution (StyleGAN2 Sec. 2.2, eqs. 1-3), noise added after demodulation.

    x [B, I, H, W], weight [O, I, k, k], styles [B, I] -> [B, O, H', W'].
    Reference: per-sample weights as one grouped conv. Batched path (StyleGAN2-ADA's fused_modconv=False):
    scale the input channels by the styles, one ordinary conv with the shared weights, scale the outputs by
    the demodulation coefficients -- the same sums, as one batched conv that CPU/GPU kernels run far better.
    """
    B, I, H, W = x.shape
    O, _, kh, kw = weight.shape
    if BATCHED_MODCONV:
        y = conv2d_resample(x * styles[:, :, None, None], weight, f, up=up, padding=padding)  # [B, O, H', W']
        if demodulate:  # ||w * s||^2 per output channel = sum_i s_i^2 * sum_k w_oik^2
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).T + 1e-8).rsqrt()  # [B, O]
            y = y * dcoefs[:, :, None, None]
    else:
        w = weight[None] * styles[:, None, :, None, None]  # [B, O, I, k, k]
        if demodulate:
            w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
        y = conv2d_resample(x.reshape(1, B * I, H, W), w.reshape(B * O, I, kh, kw), f, up=up, padding=padding, groups=B)
        y = y.reshape(B, O, *y.shape[2:])
    return y if noise is None else y + noise


class ModulatedConv(nn.Module):
    """Conv whose weights are modulated per sample by an affine map of w (StyleGAN2 synthesis layer / ToRGB).

    With up=2 it is StyleGAN2's transposed conv followed by the FIR filter (`conv2d_resample`).
    """

    def __init__(self, in_channels: int, out_channels: int, code_dim: int, kernel_size: int = 3, up: int = 1,
                 activation: str = "lrelu", demodulate: bool = True, conv_clamp: Optional[float] = 256):
        super().__init__()
        self.up, self.activation, self.demodulate, self.conv_clamp = up, activation, demodulate, conv_clamp
        self.padding = kernel_size // 2
        self.affine = FullyConnected(code_dim, in_channels, bias_init=1)  # styles start at 1
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x: torch.Tensor, code: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        styles = self.affine(code)  # [B, I]
        if not self.demodulate:  # equalized lr, folded into the styles (StyleGAN2 ToRGB)
            styles = styles / math.sqrt(self.weight[0].numel())
        if lean.active() and BATCHED_MODCONV and not torch.is_autocast_enabled(x.device.type):
            lrelu = self.activation == "lrelu"
            return lean.modulated_conv_act(x, styles, self.weight, self.bias, noise, self.resample_filter,
                                           self.demodulate, self.padding, self.up, 0.2 if lrelu else 1.0,
                                           LRELU_GAIN if lrelu else 1.0, self.conv_clamp)
        x = modulated_conv2d(x, self.weight, styles, self.resample_filter, self.demodulate, self.padding, self.up, noise)
        act_gain = LRELU_GAIN if self.activation == "lrelu" else 1.0
        return bias_act(x, self.bias, self.activation, gain=act_gain, clamp=self.conv_clamp)


class Conv2d(nn.Module):
    """Equalized-learning-rate conv with optional FIR downsampling (StyleGAN2 D layers).

    With `mod_dim`, EpiGRAF's hyper-modulation: the input channels are scaled per sample by
    1 + tanh(affine(code)) before the conv; the weights themselves are untouched and nothing is demodulated.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1, conv_clamp: Optional[float] = 256, mod_dim: int = 0):
        super().__init__()
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.affine = FullyConnected(mod_dim, in_channels, bias_init=0) if mod_dim else None
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x: torch.Tensor, code: Optional[torch.Tensor] = None, gain: float = 1.0) -> torch.Tensor:
        """In x's dtype: an fp16 block (training.precision 'reference') casts weights, bias and the modulated input
        to fp16, as StyleGAN2-ADA's Conv2dLayer does; the clamp (256 x gain) bounds its activations."""
        if self.affine is not None:
            x = (x * (1 + self.affine(code).tanh())[:, :, None, None]).to(x.dtype)  # [B, I, H, W]
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample(x, w, self.resample_filter, down=self.down, padding=self.padding)
        act_gain = (LRELU_GAIN if self.activation == "lrelu" else 1.0) * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return bias_act(x, b, self.activation, gain=act_gain, clamp=clamp)


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
