"""Distances between feature distributions: Fréchet distance (FID) and kernel inception distance (KID)."""
from __future__ import annotations

import numpy as np


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, D] -> (mean [D], covariance [D, D] divided by N, as StyleGAN2-ADA's FeatureStats.get_mean_cov)."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(0), np.cov(f, rowvar=False, bias=True)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017).

    Tr((S1 S2)^(1/2)) is the sum of square roots of the eigenvalues of S1 S2, which are real and
    non-negative for covariance matrices; this avoids scipy's sqrtm and its complex round-off.
    """
    diff = np.asarray(mu1) - np.asarray(mu2)
    eig = np.linalg.eigvals(np.asarray(sigma1) @ np.asarray(sigma2))
    tr_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_sqrt)


def kernel_distance(real: np.ndarray, fake: np.ndarray, num_subsets: int = 100, max_subset_size: int = 1000,
                    seed: int = 0) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random
    subsets (Binkowski et al. 2018; StyleGAN2-ADA's kernel_inception_distance)."""
    rng = np.random.default_rng(seed)
    n = real.shape[1]
    m = min(min(len(real), len(fake)), max_subset_size)
    t = 0.0
    for _ in range(num_subsets):
        x = fake[rng.choice(len(fake), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)
