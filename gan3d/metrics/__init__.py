"""Metrics of a generator against its dataset: FID / KID (standard Inception weights from a file) and SWD
(needs no weights). Every value comes with its protocol, so FID@2k is never mistaken for a paper's 50k FID."""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from gan3d.draws import RandomDraws
from gan3d.metrics.inception import InceptionWeightsMissing, load_inception, missing_message
from gan3d.metrics.stats import feature_stats, frechet_distance, kernel_distance
from gan3d.metrics.swd import swd

FAKES = {"fid2k_full": 2048, "fid50k_full": 50000, "kid2k_full": 2048, "kid50k_full": 50000}
_warned = False


def main_metric(metrics, inception_available: bool) -> Optional[str]:
    """The metric checkpoints are ranked by: the first FID when weights exist, else SWD."""
    for m in metrics:
        if m.startswith("fid") and inception_available:
            return m
    return "swd" if metrics else None


@torch.no_grad()
def generate(G, n: int, cfg, device, seed: int = 0, batch: int = 16, angles_pool: Optional[torch.Tensor] = None,
             truncation_psi: float = 1.0, progress: bool = False) -> torch.Tensor:
    """n full-resolution images of G (uint8 [n, 3, H, W]) with seeded latents and cameras."""
    from gan3d.render.cameras import sample_camera_angles

    gen = torch.Generator().manual_seed(seed)
    out = []
    it = range(0, n, batch)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="generating", unit="batch", disable=None)
    for i in it:
        b = min(batch, n - i)
        z = torch.randn(b, G.cfg.z_dim, generator=gen).to(device)
        if cfg.dataset.camera.dist == "dataset" and angles_pool is not None and len(angles_pool):
            angles = angles_pool[torch.randint(len(angles_pool), (b,), generator=gen)].to(device)
        else:
            cam = cfg.dataset.camera if cfg.dataset.camera.dist != "dataset" else _fallback_camera(cfg)
            angles = sample_camera_angles(b, cam, RandomDraws(generator=gen), device=device)
        c = None
        if G.c_dim:
            c = torch.nn.functional.one_hot(torch.randint(G.c_dim, (b,), generator=gen), G.c_dim).float().to(device)
        img = G(z, c, angles, truncation_psi=truncation_psi, noise_mode="const")
        out.append((img * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu())
    return torch.cat(out)


def _fallback_camera(cfg):
    from dataclasses import replace
    return replace(cfg.dataset.camera, dist="normal")


def real_images(dataset, n: int, seed: int = 0) -> torch.Tensor:
    """n real images (uint8) drawn without replacement (all of them when n >= len)."""
    if isinstance(dataset, torch.utils.data.IterableDataset):
        out = []
        for img, _, _ in dataset.iter_epoch(0):
            out.append(img)
            if len(out) >= n:
                break
        return torch.stack(out)
    idx = np.random.default_rng(seed).permutation(len(dataset))[:n]
    return torch.stack([dataset[int(i)][0] for i in idx])


def _features(net, images: torch.Tensor, device, batch: int = 64) -> np.ndarray:
    return np.concatenate([net(images[i:i + batch].to(device)).cpu().numpy() for i in range(0, len(images), batch)])


def _real_stats_cache(dataset_id: str, weights_hash: str) -> Path:
    root = Path(os.environ.get("GAN3D_CACHE", Path.home() / ".cache" / "gan3d")) / "stats"
    key = hashlib.sha256(f"{dataset_id}|{weights_hash}".encode()).hexdigest()[:16]
    return root / f"{key}.npz"


def evaluate(G, dataset, cfg, metrics, device="cpu", num_fakes: Optional[int] = None, seed: int = 0,
             dataset_id: str = "", angles_pool: Optional[torch.Tensor] = None, generate_fn=None,
             progress: bool = False) -> tuple[dict, dict]:
    """Compute `metrics` for G -> (values, protocols). FID/KID without weights: one clear message, then SWD.

    generate_fn(n, seed) -> uint8 [n, 3, H, W] replaces local generation (e.g. spread over Ray workers)."""
    global _warned
    if generate_fn is None:
        def generate_fn(n: int, s: int) -> torch.Tensor:
            return generate(G, n, cfg, device, seed=s, angles_pool=angles_pool, progress=progress)
    values: dict[str, float] = {}
    protocols: dict[str, dict] = {}
    wanted = list(metrics)
    needs_inception = [m for m in wanted if m.startswith(("fid", "kid"))]
    net = weights_hash = None
    if needs_inception:
        try:
            net, weights_hash = load_inception(cfg.metrics.inception_weights, device)
        except InceptionWeightsMissing:
            if not _warned:
                warnings.warn(missing_message(), stacklevel=2)
                _warned = True
            wanted = [m for m in wanted if m not in needs_inception] + (["swd"] if "swd" not in wanted else [])
    mirror = bool(getattr(dataset, "mirror", False))
    if "swd" in wanted:
        n = num_fakes or cfg.metrics.num_fakes
        reals = real_images(dataset, n, seed)
        fakes = generate_fn(len(reals), seed + 1)
        values.update(swd(reals, fakes, seed=seed))
        protocols["swd"] = {"num_fakes": len(fakes), "num_reals": len(reals), "mirror": mirror,
                            "descriptors": "7x7, 128 per image, 4x128 projections (ProGAN)"}
    inception_metrics = [m for m in wanted if m in FAKES]
    if inception_metrics:
        cache = _real_stats_cache(f"{dataset_id}|{cfg.dataset.resolution}|{mirror}", weights_hash)
        if cache.is_file():
            data = np.load(cache)
            real_feats = data["features"]
        else:
            real_feats = _features(net, real_images(dataset, len(dataset)), device)
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, features=real_feats)
        for m in inception_metrics:
            n = num_fakes or (cfg.metrics.num_fakes if m.endswith("2k_full") else FAKES[m])
            fake_feats = _features(net, generate_fn(n, seed + 2), device)
            if m.startswith("fid"):
                values[m] = frechet_distance(*feature_stats(real_feats), *feature_stats(fake_feats))
            else:
                values[m] = kernel_distance(real_feats, fake_feats)
            protocols[m] = {"num_fakes": n, "num_reals": len(real_feats), "mirror": mirror,
                            "resize": "bilinear to 299x299 (pytorch-fid)", "inception_sha256": weights_hash}
    return values, protocols
