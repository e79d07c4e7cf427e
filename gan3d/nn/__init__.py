"""Modules that own parameters: the tri-plane generator and the patch discriminator."""
from __future__ import annotations

import torch

from gan3d.config import ExperimentConfig
from gan3d.errors import ConfigError
from gan3d.nn.discriminator import PatchDiscriminator
from gan3d.nn.generator import Patch, TriplaneGenerator
from gan3d.nn.layers import DTYPES


def build_generator(cfg: ExperimentConfig) -> TriplaneGenerator:
    return TriplaneGenerator(cfg.model.generator, cfg.dataset.camera, cfg.dataset.resolution,
                             cfg.dataset.c_dim if cfg.dataset.use_labels else 0)


def build_discriminator(cfg: ExperimentConfig) -> PatchDiscriminator:
    return PatchDiscriminator(cfg.model.discriminator, cfg.dataset.resolution, cfg.training.patch.resolution,
                              cfg.dataset.c_dim if cfg.dataset.use_labels else 0)


def set_training_precision(cfg: ExperimentConfig, G: TriplaneGenerator, D: PatchDiscriminator) -> None:
    """training.precision for the conv stacks of the trained G and D (G_ema and renders stay fp32). A precision
    the device cannot run is an error, never a silent fallback to fp32."""
    device = next(G.parameters()).device
    if cfg.training.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"key 'training.precision' = 'bf16' is not supported on {torch.cuda.get_device_name(device)}:"
                          " expected fp32 there")
    G.synthesis.compute_dtype = D.compute_dtype = DTYPES[cfg.training.precision]


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["Patch", "TriplaneGenerator", "PatchDiscriminator", "build_generator", "build_discriminator", "set_training_precision",
           "count_parameters"]
