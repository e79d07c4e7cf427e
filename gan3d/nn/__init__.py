"""Modules that own parameters: the tri-plane generator and the patch discriminator."""
from __future__ import annotations

import torch

from gan3d.config import ExperimentConfig
from gan3d.errors import ConfigError, first_line
from gan3d.nn.discriminator import PatchDiscriminator
from gan3d.nn.generator import Patch, TriplaneGenerator
from gan3d.nn.layers import DTYPES


def build_generator(cfg: ExperimentConfig) -> TriplaneGenerator:
    return TriplaneGenerator(cfg.model.generator, cfg.dataset.camera, cfg.dataset.resolution,
                             cfg.dataset.c_dim if cfg.dataset.use_labels else 0)


def build_discriminator(cfg: ExperimentConfig) -> PatchDiscriminator:
    return PatchDiscriminator(cfg.model.discriminator, cfg.dataset.resolution, cfg.training.patch.resolution,
                              cfg.dataset.c_dim if cfg.dataset.use_labels else 0)


def resolve_precision(precision: str, device: torch.device) -> str:
    """training.precision 'auto': the reference's numerics on a GPU, fp32 elsewhere (the reference forces fp32 off
    CUDA too)."""
    if precision == "auto":
        return "reference" if device.type == "cuda" else "fp32"
    return precision


def set_training_precision(cfg: ExperimentConfig, G: TriplaneGenerator, D: PatchDiscriminator) -> str:
    """training.precision for the trained G and D (G_ema and renders stay fp32); returns the one in force.

    'reference': TF32 off for convolutions and matmuls (the reference's training_loop.py:77-78), D's blocks of the
    four highest resolutions in fp16 with conv_clamp 256 (its num_fp16_res=4), G's tri-plane synthesis fp32.
    'fp32': everything fp32, TF32 off. 'tf32': fp32 with TF32 convolutions and matmuls on a GPU. 'bf16': autocast
    of G's synthesis and D's blocks. A precision the device cannot run is an error, never a silent fallback."""
    device = next(G.parameters()).device
    precision = resolve_precision(cfg.training.precision, device)
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"key 'training.precision' = 'bf16' is not supported on {torch.cuda.get_device_name(device)}:"
                          " expected reference or fp32 there")
    if device.type == "cuda":  # process-wide, as in the reference (its renders and metrics run without TF32 too)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    G.synthesis.compute_dtype = D.compute_dtype = DTYPES[precision]
    D.use_fp16_blocks(4 if precision == "reference" else 0)
    return precision


def use_triplane_kernel(cfg: ExperimentConfig, G: TriplaneGenerator) -> None:
    """training.triplane_kernel: the trained G looks its tri-planes up with gan3d's C++ CPU kernel (render/
    triplane_cpu.cpp: the same sums as grid_sample, channels-last texels) and its synthesis hands the planes over in
    that layout. G_ema and renders keep grid_sample. Where the kernel cannot be built, or on a GPU, this is an
    error here, never a silent fallback to grid_sample. Call it before compile_for_training (the layout is traced)."""
    if not cfg.training.triplane_kernel:
        return
    from gan3d.render import triplane_kernel

    device = next(G.parameters()).device
    if device.type != "cpu":
        raise ConfigError(f"key 'training.triplane_kernel' = true: the kernel runs on CPU only; expected false on"
                          f" {device.type}")
    try:
        triplane_kernel.load()
    except triplane_kernel.KernelUnavailable as e:
        raise ConfigError(f"key 'training.triplane_kernel' = true: the C++ kernel cannot be built here ({e});"
                          " expected false on this machine") from None
    G.triplane_kernel = G.synthesis.channels_last_planes = True


def compile_for_training(cfg: ExperimentConfig, G: TriplaneGenerator, batch: int) -> None:
    """training.compile: torch.compile (inductor) of the trained G's synthesis network, in place (state_dict keys
    unchanged; G_ema and renders stay eager). Only the synthesis: it is most of a step and is differentiated once,
    whereas D is differentiated twice by R1, which compiled graphs do not support, and compiling D's other passes
    or the renderer measured no gain on CPU (docs/PERF.md). A machine where inductor cannot build is an error
    here, never a silent eager fallback. `batch`: the micro-batch G runs at (graphs are built for fixed shapes)."""
    if not cfg.training.compile:
        return
    import torch._inductor.config as inductor_config

    # the synthesis layers draw their noise inside the graph: with fallback_random they draw eager's numbers
    # from eager's generator, so a seed gives the same run compiled or not (within float rounding)
    inductor_config.fallback_random = True
    G.synthesis.compile(dynamic=False)
    device = next(G.parameters()).device
    ws = torch.zeros(batch, G.synthesis.num_ws, G.cfg.w_dim, device=device)
    try:  # build the no-grad graph now (the D phase needs it), so a machine that cannot build fails here, in one line
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            G.synthesis(ws)
    except Exception as e:  # noqa: BLE001 -- inductor reports a missing compiler or backend many ways
        G.synthesis._compiled_call_impl = None
        raise ConfigError(f"key 'training.compile' = true: torch.compile cannot build on {device.type} here"
                          f" ({first_line(e)});"
                          " expected false on this machine") from None


def prepare_for_training(cfg: ExperimentConfig, G: TriplaneGenerator, D: PatchDiscriminator, batch: int) -> None:
    """The training.* switches for the trained G and D, in the order they need (the kernel's plane layout is
    traced by the compile). `batch`: the micro-batch G runs at."""
    set_training_precision(cfg, G, D)
    use_triplane_kernel(cfg, G)
    compile_for_training(cfg, G, batch)


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["Patch", "TriplaneGenerator", "PatchDiscriminator", "build_generator", "build_discriminator", "set_training_precision",
           "resolve_precision",
           "use_triplane_kernel", "compile_for_training",
           "prepare_for_training", "count_parameters"]
