"""gan3d's CPU kernel for the tri-plane lookup (`training.triplane_kernel`; source: triplane_cpu.cpp).

The same sums as `triplane.sample_triplane` (within float rounding), reading channels-last texels and
scattering the backward per (sample, plane) without atomics. Built once per machine with PyTorch's extension
builder (ninja + the C++ compiler), cached under torch's extensions folder, one build per CPU capability so a
cache shared by different machines never runs instructions a CPU lacks. Gradients reach the planes only.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from gan3d.errors import first_line

_SOURCE = Path(__file__).with_name("triplane_cpu.cpp")
# the vector instructions PyTorch itself dispatches to on this CPU (x86 only; others build plainly)
_FLAGS = {"AVX512": ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma"],
          "AVX2": ["-mavx2", "-mfma"]}


class KernelUnavailable(RuntimeError):
    """The kernel cannot be built or loaded here; the message is one line."""


@functools.cache
def load() -> None:
    """Build (first time on this machine) and load the kernel's ops into torch.ops.gan3d."""
    capability = torch.backends.cpu.get_cpu_capability()
    build(_SOURCE, f"gan3d_triplane_{capability.lower()}", _FLAGS.get(capability, []))


def build(source: Path, name: str, flags: list[str]) -> None:
    """Compile `source` as the extension `name` and load it; KernelUnavailable (one line) where that fails."""
    from torch.utils import cpp_extension

    try:
        cpp_extension.load(name=name, sources=[str(source)], extra_cflags=["-O3", *flags], is_python_module=False,
                           verbose=False)
    except Exception as e:  # noqa: BLE001 -- a missing compiler or ninja surfaces as several exception types
        raise KernelUnavailable(first_line(e)) from None


class _TriplaneSample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, planes, points):
        ctx.save_for_backward(planes, points)
        return torch.ops.gan3d.triplane_forward(planes, points)

    @staticmethod
    def backward(ctx, grad_out):
        planes, points = ctx.saved_tensors
        grad = torch.ops.gan3d.triplane_backward(grad_out, planes, points) if ctx.needs_input_grad[0] else None
        return grad, None


def channels_last(planes: torch.Tensor) -> torch.Tensor:
    """planes [B, 3, C, H, W] with each texel's C channels contiguous (memory [B, 3, H, W, C]): a copy only if needed."""
    if planes.stride(2) == 1:
        return planes
    return planes.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


def sample(planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """planes [B, 3, C, H, W], points [B, N, 3] in [-1, 1]^3 -> features [B, N, C], as triplane.sample_triplane."""
    if points.requires_grad:
        raise ValueError("the tri-plane kernel differentiates the planes only; these points require grad")
    return _TriplaneSample.apply(channels_last(planes), points.contiguous())
