"""Which images a rank reads in an epoch (zip and Parquet datasets alike)."""
from __future__ import annotations

import numpy as np


def epoch_order(num_units: int, epoch: int, seed: int, rank: int, world: int) -> np.ndarray:
    """This rank's units for an epoch: a seeded permutation split [rank::world] (disjoint, covering)."""
    perm = np.random.default_rng([seed, epoch]).permutation(num_units)
    return perm[rank::world]
