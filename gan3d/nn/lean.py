"""Autograd functions that keep only what their backward needs (`gan3d bench --memory` measures them).

PyTorch's autograd saves every input an op's derivative formula names: leaky ReLU keeps its input, clamp its
input, a product both factors, a convolution its input. Along a StyleGAN2 layer that is four or five copies of
every activation map, most of them for derivatives that can be read off a tensor kept anyway:

- `act`: leaky ReLU x gain, clamped, saves its *output*: the derivative is gain (or slope x gain) where the
  output is positive (or not) and 0 where it was clamped. Differentiable twice (R1 differentiates D twice); the
  second derivative of a piecewise-linear map is 0.
- `modulated_conv_act`: a synthesis layer (style modulation, conv with optional 2x transposed upsampling and
  FIR filter, demodulation, noise, bias, activation) as one node that saves its input and its output, both kept
  anyway by its neighbours. The modulated input x * s is recomputed in backward (one multiply), and the
  demodulation's gradient needs the conv output y = z / d, which is read back from the saved output where it
  matters (unclamped outputs: z = act^-1(out) - bias - noise; where clamped, the gradient is 0 whatever y
  is). First order only: G is never differentiated twice.
- `render.triplane`'s lookup (its own layer): bilinear tri-plane lookup whose backward w.r.t. the planes needs only the sample
  positions (it is linear in the planes), so the planes are not saved; positions that need a gradient (camera
  fitting in inversion) take PyTorch's op.

Each is tested against the plain PyTorch composition (values, gradients, and second order for `act`):
tests/test_lean.py. Differences are float rounding (the recomputed y: ~1e-7 relative).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

ENABLED = True  # use(False) restores PyTorch's own ops everywhere (gan3d bench --compare; the tests)


def active() -> bool:
    """Whether ops here take the lean functions: when enabled, recording gradients, and not inside torch.compile
    (whose partitioner chooses what to save and recompute by itself, over the whole compiled graph)."""
    return ENABLED and torch.is_grad_enabled() and not torch.compiler.is_compiling()


def use(enabled: bool) -> None:
    """Switch the lean functions on or off together (the tri-plane lookup's lives in gan3d.render.triplane)."""
    from gan3d.render import triplane

    global ENABLED
    ENABLED = triplane.LEAN = enabled


# ------------------------------------------------------------------------------------------------- activation
def _act_grad(g: torch.Tensor, y: torch.Tensor, slope: float, gain: float, clamp: Optional[float]) -> torch.Tensor:
    """g * d out / d in of clamp(lrelu(x, slope) * gain), from the output y: zero where clamped (|y| at the
    clamp), gain or slope x gain by the sign of y (PyTorch's own backward kernels, which take the output)."""
    if clamp is not None:
        g = torch.ops.aten.hardtanh_backward(g, y, -clamp, clamp)  # g where -clamp < y < clamp, else 0
    g = g * gain if gain != 1 else g
    return torch.ops.aten.leaky_relu_backward(g, y, slope, True) if slope != 1 else g


def _act_(y: torch.Tensor, slope: float, gain: float, clamp: Optional[float]) -> torch.Tensor:
    """The activation in place on a fresh tensor."""
    if slope != 1:
        F.leaky_relu_(y, slope)
    if gain != 1:
        y.mul_(gain)
    if clamp is not None:
        y.clamp_(-clamp, clamp)
    return y


class _Act(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, slope: float, gain: float, clamp: Optional[float]):
        y = _act_(F.leaky_relu(x, slope) if slope != 1 else x.clone(), 1.0, gain, clamp)
        ctx.save_for_backward(y)
        ctx.args = slope, gain, clamp
        return y

    @staticmethod
    def backward(ctx, gy):
        (y,) = ctx.saved_tensors
        return _ActGrad.apply(gy, y, *ctx.args), None, None, None


class _ActGrad(torch.autograd.Function):
    """gy -> gy * act'(y): linear in gy; its derivative w.r.t. y is 0 almost everywhere. Keeps y (kept anyway),
    not the slopes."""

    @staticmethod
    def forward(ctx, gy, y, slope: float, gain: float, clamp: Optional[float]):
        ctx.save_for_backward(y)
        ctx.args = slope, gain, clamp
        return _act_grad(gy, y, slope, gain, clamp)

    @staticmethod
    def backward(ctx, ggx):
        (y,) = ctx.saved_tensors
        return _act_grad(ggx, y, *ctx.args), None, None, None, None


def act(x: torch.Tensor, slope: float = 0.2, gain: float = 1.0, clamp: Optional[float] = None) -> torch.Tensor:
    """clamp(leaky_relu(x, slope) * gain, -clamp, clamp) (slope 1: linear), saving only the output."""
    return _Act.apply(x, slope, gain, clamp)


# ----------------------------------------------------------------------------------------- synthesis layer
def _demod(styles: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's demodulation coefficients [B, O] of weights [O, I, k, k] scaled by styles [B, I]."""
    return (styles.square() @ weight.square().sum(dim=[2, 3]).T + 1e-8).rsqrt()


def _conv(xs, weight, f, up: int, padding: int):
    from gan3d.nn.resample import conv2d_resample
    return conv2d_resample(xs, weight, f, up=up, padding=padding)


class _ModConvAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, styles, weight, bias, noise, f, demodulate: bool, padding: int, up: int, slope: float,
                gain: float, clamp: Optional[float]):
        y = _conv(x * styles[:, :, None, None], weight, f, up, padding)  # [B, O, H', W']
        d = _demod(styles, weight) if demodulate else None
        if d is not None:
            y.mul_(d[:, :, None, None])
        if noise is not None:
            y.add_(noise)
        y.add_(bias.to(y.dtype)[None, :, None, None])
        out = _act_(y, slope, gain, clamp)  # in place on y: no second map
        ctx.save_for_backward(x, styles, weight, bias, noise, f, d, out)
        ctx.args = demodulate, padding, up, slope, gain, clamp, noise is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        x, styles, weight, bias, noise, f, d, out = ctx.saved_tensors
        demodulate, padding, up, slope, gain, clamp, has_noise = ctx.args
        g_a = _act_grad(g_out, out, slope, gain, clamp)  # d loss / d (conv * d + noise + bias)
        B, O = g_a.shape[:2]
        g_bias = g_a.sum(dim=[0, 2, 3])
        g_noise = g_a.sum_to_size(noise.shape) if has_noise and ctx.needs_input_grad[4] else None
        g_styles_d = g_weight_d = None
        if demodulate:
            # the conv output before demodulation, read back from the output (exact where g_a != 0)
            z = F.leaky_relu(out, 1 / slope) if slope != 1 else out.clone()  # the activation's input x gain
            z.sub_(bias[None, :, None, None], alpha=gain)
            if has_noise:
                z.sub_(noise, alpha=gain)
            g_d = _dot(g_a, z) / (d * gain)  # sum_hw g_a * y, with y = z / (gain d)
            del z
            with torch.enable_grad():
                s_, w_ = styles.detach().requires_grad_(), weight.detach().requires_grad_()
                g_styles_d, g_weight_d = torch.autograd.grad(_demod(s_, w_), [s_, w_], g_d)
            g_y = g_a * d[:, :, None, None]
        else:
            g_y = g_a
        del g_a
        xs = x * styles[:, :, None, None]
        g_xs, g_weight = _conv_backward(g_y, xs, weight, f, up, padding)
        g_styles = _dot(g_xs, x)
        g_x = g_xs.mul_(styles[:, :, None, None])
        if demodulate:
            g_styles, g_weight = g_styles + g_styles_d, g_weight + g_weight_d
        return g_x, g_styles, g_weight, g_bias, g_noise, None, None, None, None, None, None, None


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum over H, W of a * b, [B, C, H, W] -> [B, C], as one batched matmul (no product map)."""
    B, C = a.shape[:2]
    return torch.bmm(a.reshape(B * C, 1, -1), b.reshape(B * C, -1, 1)).reshape(B, C)


def _conv_backward(g_y, xs, weight, f, up: int, padding: int):
    """Gradients of conv2d_resample(xs, weight, f, up, padding) w.r.t. xs and weight, from the conv kernels'
    own backward (aten.convolution_backward: what autograd would call, without the forward's saved copies)."""
    if up == 1:
        g_xs, g_w, _ = torch.ops.aten.convolution_backward(g_y, xs, weight, None, [1, 1], [padding, padding], [1, 1],
                                                           False, [0, 0], 1, [True, True, False])
        return g_xs, g_w
    # up: a stride-2 transposed conv, then upfirdn2d's FIR filter (pad or crop, then a valid correlation): its
    # adjoint is the transposed correlation, then the opposite pad
    from gan3d.nn.resample import filter_conv

    kw = weight.shape[-1]
    fk = f.shape[0]
    p0 = padding + (fk + up - 1) // 2 - (kw - 1)
    p1 = padding + (fk - up) // 2 - (kw - up)
    g_t = F.pad(filter_conv(g_y, (f * up ** 2).flip([0, 1]), 1, transpose=True), [-p0, -p1, -p0, -p1])
    g_xs, g_wt, _ = torch.ops.aten.convolution_backward(g_t, xs, weight.transpose(0, 1), None, [up, up], [0, 0],
                                                        [1, 1], True, [0, 0], 1, [True, True, False])
    return g_xs, g_wt.transpose(0, 1)


def modulated_conv_act(x, styles, weight, bias, noise, f, demodulate: bool, padding: int, up: int, slope: float,
                       gain: float, clamp: Optional[float]) -> torch.Tensor:
    """act(modulated_conv2d(x, weight, styles, ...) + noise + bias): layers.modulated_conv2d's batched path and
    layers.bias_act as one node that saves its input and output only (module docstring)."""
    return _ModConvAct.apply(x, styles, weight, bias, noise, f, demodulate, padding, up, slope, gain, clamp)
