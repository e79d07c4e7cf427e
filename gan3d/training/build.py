"""What a training process builds before its first step, one way for the training loop and the benchmarks."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch

from gan3d.config import ExperimentConfig
from gan3d.nn import build_discriminator, build_generator, prepare_for_training
from gan3d.training.augment import AugmentPipe
from gan3d.training.phases import Phase, make_optimizers, make_phases


@dataclass
class Networks:
    G: torch.nn.Module
    D: torch.nn.Module
    G_ema: Optional[torch.nn.Module]
    augment: AugmentPipe
    optimizers: dict[str, torch.optim.Optimizer]
    phases: list[Phase]

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        """What a checkpoint holds and a resume loads, by name."""
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema, "augment": self.augment}


def build_networks(cfg: ExperimentConfig, device: torch.device, batch_gpu: int, ema: bool = True) -> Networks:
    """G, D (and G_ema, a copy of G), the augmentation, the optimizers and the phases of `cfg` on `device`, prepared
    for training at `batch_gpu` images per micro-batch (precision, compilation, kernels). Initial weights are seeded
    by training.seed alone, so every rank starts from the same ones."""
    t = cfg.training
    torch.manual_seed(t.seed)
    G = build_generator(cfg).to(device).train().requires_grad_(False)
    D = build_discriminator(cfg).to(device).train().requires_grad_(False)
    G_ema = copy.deepcopy(G).eval() if ema else None
    prepare_for_training(cfg, G, D, batch_gpu)
    augment = AugmentPipe(t.augment.kind, t.augment.p, t.augment.target, t.augment.speed_kimg).to(device)
    return Networks(G, D, G_ema, augment, make_optimizers(cfg, G, D), make_phases(t))
