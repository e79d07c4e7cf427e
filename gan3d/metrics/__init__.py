"""Metrics of a generator against its dataset: FID / KID (standard Inception weights from a file) and SWD
(needs no weights). Every value comes with its protocol, so FID@2k is never mistaken for a paper's 50k FID."""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from gan3d.draws import RandomDraws
from gan3d.metrics.inception import PREPARATION, InceptionWeightsMissing, load_inception, missing_message
from gan3d.metrics.stats import feature_stats, frechet_distance, kernel_distance
from gan3d.metrics.swd import swd
from gan3d.storage import cache_root

FAKES = {"fid2k_full": 2048, "fid50k_full": 50000, "kid2k_full": 2048, "kid50k_full": 50000}
_warned = False


RANKING = ("fid50k_full", "fid2k_full", "swd")  # what ranks checkpoints, most trusted first


def main_metric(metrics, inception_available: bool) -> Optional[str]:
    """The metric checkpoints are ranked by: the first FID when weights exist, else SWD."""
    for m in metrics:
        if m.startswith("fid") and inception_available:
            return m
    return "swd" if metrics else None


def ranking_metric(cfg) -> Optional[str]:
    """The metric a run of `cfg` ranks its checkpoints by (Ray Train's checkpoint score, a sweep's metric)."""
    from gan3d.metrics.inception import weights_path

    return main_metric(cfg.metrics.metrics, weights_path(cfg.metrics.inception_weights) is not None)


def ranking_of_logged(seen) -> Optional[str]:
    """The metric to rank a finished run's checkpoints by, from the metrics they logged."""
    return next((m for m in RANKING if m in seen), None)


@contextlib.contextmanager
def no_tf32():
    """TF32 off while measuring (the reference's process never enables it), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def conditioning(dataset) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """What fakes are conditioned on: every entry's camera [N, 3] (None without poses) and class [N] of the
    dataset as given (the reference's metrics open it with xflip=False: pass an unflipped dataset)."""
    angles, labels = dataset.pose_pool()
    return (torch.as_tensor(angles) if angles is not None else None), torch.as_tensor(labels)


@torch.no_grad()
def generate(G, n: int, cfg, device, seed: int = 0, batch: int = 16,
             pool: Optional[tuple[Optional[torch.Tensor], torch.Tensor]] = None, truncation_psi: float = 1.0,
             progress: bool = False) -> torch.Tensor:
    """n full-resolution fakes (uint8 [n, 3, H, W]) as the reference's metrics render them (its metric_utils.py
    compute_feature_stats_for_generator): z ~ N(0, I); the label and, with dataset cameras, the camera of a random
    entry of `pool` (conditioning(); else cameras from the configured distribution); random synthesis noise and
    random ray samples (jitter, importance samples), as its eval-mode G draws them. Every draw comes from
    generators seeded by `seed` on `device`: an evaluation is reproducible, its noise not constant."""
    from gan3d.render.cameras import sample_camera_angles

    draws = RandomDraws(np.random.default_rng(seed), torch.Generator(device=device).manual_seed(seed))
    angles_pool, labels_pool = pool if pool is not None else (None, torch.zeros(0, dtype=torch.long))
    cam = cfg.dataset.camera
    use_pool_cameras = cam.dist == "dataset" and angles_pool is not None and len(angles_pool)
    out = []
    it = range(0, n, batch)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="generating", unit="batch", disable=None)
    for i in it:
        b = min(batch, n - i)
        z = draws.normal("z", (b, G.cfg.z_dim), device)
        idx = torch.from_numpy(draws.integers("pose_index", max(len(labels_pool), 1), b))
        if use_pool_cameras:
            angles = angles_pool[idx].to(device)
        else:
            angles = sample_camera_angles(b, cam if cam.dist != "dataset" else _fallback_camera(cfg), draws, device)
        c = None
        if G.c_dim:
            classes = labels_pool[idx] if len(labels_pool) else torch.from_numpy(draws.integers("label", G.c_dim, b))
            c = torch.nn.functional.one_hot(classes, G.c_dim).float().to(device)
        img = G(z, c, angles, truncation_psi=truncation_psi, noise_mode="random", stochastic=True, draws=draws)
        out.append(to_uint8(img).cpu())
    return torch.cat(out)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> uint8 as the reference rounds them: x * 127.5 + 128, clamped, truncated."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def _fallback_camera(cfg):
    from dataclasses import replace
    return replace(cfg.dataset.camera, dist="normal")


def real_images(dataset, n: Optional[int] = None, seed: int = 0) -> torch.Tensor:
    """n real images (uint8) of the dataset as given, drawn without replacement; all of them in order when n is
    None or >= its size."""
    if isinstance(dataset, torch.utils.data.IterableDataset):
        out = []
        for img, _, _ in dataset.iter_epoch(0):
            out.append(img)
            if n is not None and len(out) >= n:
                break
        return torch.stack(out)
    idx = range(len(dataset)) if n is None or n >= len(dataset) else np.random.default_rng(seed).permutation(len(dataset))[:n]
    return torch.stack([dataset[int(i)][0] for i in idx])


def _features(net, images: torch.Tensor, device, batch: int = 64) -> np.ndarray:
    return np.concatenate([net(images[i:i + batch].to(device)).double().cpu().numpy()
                           for i in range(0, len(images), batch)])


def _real_stats_cache(key: str) -> Path:
    return cache_root() / "stats" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def protocol_line(name: str, protocol: dict) -> str:
    """One line saying how a metric was measured (gan3d eval prints it)."""
    if name == "swd":
        return f"swd: {protocol['num_fakes']} fakes vs {protocol['num_reals']} reals, {protocol['descriptors']}"
    ref = "the reference's protocol" if not protocol["mirror"] else "NOT the reference's protocol (mirrored reals)"
    return (f"{name}: {ref}: {protocol['num_fakes']} fakes vs all {protocol['num_reals']} unflipped reals"
            f"{' and their mirrors' if protocol['mirror'] else ''}; fakes {protocol['fakes']}; "
            f"{protocol['preparation']}; detector {protocol['detector']} sha256 {protocol['detector_sha256'][:12]}")


def evaluate(G, dataset, cfg, metrics, device="cpu", num_fakes: Optional[int] = None, seed: int = 0,
             dataset_id: str = "", generate_fn=None, progress: bool = False, mirror: bool = False
             ) -> tuple[dict, dict]:
    """Compute `metrics` for G -> (values, protocols). FID/KID as the reference computes them (StyleGAN2-ADA's
    metric code): every real image unflipped, whatever `dataset.mirror` says (`mirror=True` measures against the
    mirrored set instead: not the paper's protocol), fakes from generate(), the reference's image preparation
    (inception.prepare), mean and covariance over N, TF32 off. Without weights: one clear line, then SWD.

    generate_fn(n, seed) -> uint8 [n, 3, H, W] replaces local generation (e.g. spread over Ray workers)."""
    global _warned
    dataset = dataset.with_mirror(mirror)
    pool = conditioning(dataset)
    if generate_fn is None:
        def generate_fn(n: int, s: int) -> torch.Tensor:
            return generate(G, n, cfg, device, seed=s, pool=pool, progress=progress)
    values: dict[str, float] = {}
    protocols: dict[str, dict] = {}
    wanted = list(metrics)
    needs_inception = [m for m in wanted if m.startswith(("fid", "kid"))]
    net = weights_hash = None
    if needs_inception:
        try:
            net, weights_hash = load_inception(cfg.metrics.inception_weights, device, cfg.metrics.detector_sha256)
        except InceptionWeightsMissing:
            if not _warned:
                print(missing_message(), flush=True)
                _warned = True
            wanted = [m for m in wanted if m not in needs_inception] + (["swd"] if "swd" not in wanted else [])
    with no_tf32():
        if "swd" in wanted:
            n = num_fakes or cfg.metrics.num_fakes
            reals = real_images(dataset, n, seed)
            fakes = generate_fn(len(reals), seed + 1)
            values.update(swd(reals, fakes, seed=seed))
            protocols["swd"] = {"num_fakes": len(fakes), "num_reals": len(reals), "mirror": mirror,
                                "descriptors": "7x7, 128 per image, 4x128 projections (ProGAN)"}
        inception_metrics = [m for m in wanted if m in FAKES]
        if inception_metrics:
            cache = _real_stats_cache(f"{dataset_id}|{cfg.dataset.resolution}|mirror={mirror}|{PREPARATION}|"
                                      f"{weights_hash}")
            if cache.is_file():
                real_feats = np.load(cache)["features"]
            else:
                real_feats = _features(net, real_images(dataset), device)
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cache, features=real_feats)
            fakes_from = ("z ~ N(0, I), label and camera of random dataset entries" if cfg.dataset.camera.dist == "dataset"
                          else f"z ~ N(0, I), cameras '{cfg.dataset.camera.dist}'")
            for m in inception_metrics:
                n = num_fakes or (cfg.metrics.num_fakes if m.endswith("2k_full") else FAKES[m])
                fake_feats = _features(net, generate_fn(n, seed + 2), device)
                if m.startswith("fid"):
                    values[m] = frechet_distance(*feature_stats(real_feats), *feature_stats(fake_feats))
                else:
                    values[m] = kernel_distance(real_feats, fake_feats)
                protocols[m] = {"num_fakes": n, "num_reals": len(real_feats), "mirror": mirror,
                                "fakes": fakes_from + ", random synthesis noise and ray samples (seeded), psi 1",
                                "preparation": PREPARATION, "covariance": "divided by N", "tf32": "off",
                                "detector": type(net).__name__, "detector_sha256": weights_hash}
    return values, protocols
