"""Every random draw of a training step, asked for by name from one object: the step-parity seam.

A step draws random numbers in many places: latents, the dataset entries fakes take their poses and labels
from, cameras, patch scales and offsets, synthesis noise, ray jitter, density noise, importance samples,
augmentation. Each is asked of a `Draws` by a name that says what it is, within the scope of its phase
(`draws.scope("Gall")`); the names are those of the reference's recorded iteration (shared/seed_parity/STEP.md).
Production code uses `RandomDraws`; tests/test_step_parity.py replays the reference's recorded draws through the
same calls, so gan3d's own training step is compared with the reference's without patching torch.

Shapes follow the tensors they perturb (e.g. [B, R, S] for ray jitter); a replay checks them.
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence

import numpy as np
import torch


class Draws(Protocol):
    def normal(self, name: str, shape: Sequence[int], device=None) -> torch.Tensor:
        """N(0, 1) float32 of `shape` on `device`."""

    def uniform(self, name: str, shape: Sequence[int], device=None) -> torch.Tensor:
        """U[0, 1) float32 of `shape` on `device`."""

    def random(self, name: str, size: int) -> np.ndarray:
        """U[0, 1) float64 [size] (numpy, as the reference draws uniform patch scales)."""

    def beta(self, name: str, a: float, b: float, size: int) -> np.ndarray:
        """Beta(a, b) float64 [size] (numpy, as the reference draws patch scales)."""

    def integers(self, name: str, high: int, size: int) -> np.ndarray:
        """Integers in [0, high), int64 [size] (the dataset entries the fakes' poses and labels come from)."""

    def choice(self, name: str, options: Sequence[float], size: int) -> np.ndarray:
        """`size` picks from `options` with replacement, float64."""

    def scope(self, name: str) -> "Draws":
        """The draws of one phase (the same stream in production)."""


class RandomDraws:
    """Production draws: tensors from `generator` (a CPU torch.Generator; the tensor is then moved) or else from the
    global generator of their device (seeded per rank and step by the training loop), numpy draws from `rng`.
    `scope` returns the same object: one stream per rank."""

    def __init__(self, rng: Optional[np.random.Generator] = None, generator: Optional[torch.Generator] = None):
        self.rng = rng if rng is not None else np.random.default_rng()
        self.generator = generator

    def normal(self, name: str, shape: Sequence[int], device=None) -> torch.Tensor:
        if self.generator is not None:
            return torch.randn(tuple(shape), generator=self.generator).to(device or "cpu")
        return torch.randn(tuple(shape), device=device)

    def uniform(self, name: str, shape: Sequence[int], device=None) -> torch.Tensor:
        if self.generator is not None:
            return torch.rand(tuple(shape), generator=self.generator).to(device or "cpu")
        return torch.rand(tuple(shape), device=device)

    def random(self, name: str, size: int) -> np.ndarray:
        return self.rng.random(size)

    def beta(self, name: str, a: float, b: float, size: int) -> np.ndarray:
        return self.rng.beta(a, b, size=size)

    def integers(self, name: str, high: int, size: int) -> np.ndarray:
        return self.rng.integers(high, size=size)

    def choice(self, name: str, options: Sequence[float], size: int) -> np.ndarray:
        return self.rng.choice(np.asarray(options, dtype=np.float64), size=size)

    def scope(self, name: str) -> "RandomDraws":
        return self


def seeded(seed: int) -> RandomDraws:
    """Draws of their own, reproducible from `seed` alone (datasets, metrics, renders): no global state."""
    return RandomDraws(np.random.default_rng(seed), torch.Generator().manual_seed(seed))


GLOBAL = RandomDraws()  # torch's global generators: what a module draws when no step hands it its draws
