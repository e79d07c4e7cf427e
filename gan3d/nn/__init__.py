"""Modules that own parameters: the tri-plane generator and the patch discriminator."""
from __future__ import annotations

from gan3d.config import ExperimentConfig
from gan3d.nn.discriminator import PatchDiscriminator
from gan3d.nn.generator import Patch, TriplaneGenerator


def build_generator(cfg: ExperimentConfig) -> TriplaneGenerator:
    return TriplaneGenerator(cfg.model.generator, cfg.dataset.camera, cfg.dataset.resolution,
                             cfg.dataset.c_dim if cfg.dataset.use_labels else 0)


def build_discriminator(cfg: ExperimentConfig) -> PatchDiscriminator:
    return PatchDiscriminator(cfg.model.discriminator, cfg.dataset.resolution, cfg.training.patch.resolution,
                              cfg.dataset.c_dim if cfg.dataset.use_labels else 0)


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["Patch", "TriplaneGenerator", "PatchDiscriminator", "build_generator", "build_discriminator",
           "count_parameters"]
