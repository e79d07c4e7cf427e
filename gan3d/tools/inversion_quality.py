"""Inversion where the truth is known (`gan3d bench --mode invert`, docs/INVERSION.md): renders of known latents
from known cameras, inverted by every mode, scored on the image and on novel views."""
from __future__ import annotations

import statistics
import time

import torch

from gan3d.config import ExperimentConfig
from gan3d.tools.inversion import InvertSettings, invert, render_ws
from gan3d.metrics.similarity import psnr
from gan3d.nn import build_generator


def measure_inversion(cfg: ExperimentConfig, steps: int = 150, pti_steps: int = 100, images: int = 2,
                 resolution: int = 0, seed: int = 5) -> dict:
    """Inversion where the truth is known (issue 15's measure): images rendered by the experiment's generator
    (freshly initialised, fixed seed) from known latents and cameras within the training distribution; each
    mode's reconstruction PSNR, and the novel-view PSNR of the inverted latent at +-0.52 rad (30 degrees) yaw
    against the true latent at the same cameras, beside the mean latent's (what knowing nothing gives)."""
    torch.manual_seed(0)
    G = build_generator(cfg).eval().requires_grad_(False)
    res = resolution or G.img_resolution
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(images, G.cfg.z_dim, generator=gen)
    cam = G.camera
    cams = torch.stack([torch.tensor([cam.yaw_mean + (0.3 if i % 2 else -0.3) * max(cam.yaw_std, 0.1),
                                      cam.pitch_mean, 0.0]) for i in range(images)])
    c = G.default_labels(images)
    with torch.no_grad():
        ws_true = G.map(z, c, cams)
        targets = render_ws(G, ws_true, cams, res)
    side = [torch.tensor([[d, 0.0, 0.0]]) for d in (-0.52, 0.52)]

    def novel(Gx, ws, i):
        with torch.no_grad():
            return statistics.mean(float(psnr(render_ws(Gx, ws, cams[i:i + 1] + d, res),
                                              render_ws(G, ws_true[i:i + 1], cams[i:i + 1] + d, res))) for d in side)

    out = {"resolution": res, "images": images, "steps": steps, "pti_steps": pti_steps, "modes": {}}
    with torch.no_grad():  # the mean w of the mapping network, from samples
        zs = torch.randn(2000, G.cfg.z_dim, generator=gen)
        mean_ws = G.map(zs, G.default_labels(2000), cams[:1].expand(2000, -1)).mean(0, keepdim=True)
    out["mean_latent_novel_psnr"] = statistics.mean(novel(G, mean_ws, i) for i in range(images))
    for mode in ("w", "wplus", "pti"):
        t0 = time.perf_counter()
        runs = invert(G, targets, cams, InvertSettings(mode=mode, steps=steps, pti_steps=pti_steps))
        out["modes"][mode] = {"psnr": statistics.mean(r.metrics["psnr"] for r in runs),
                              "novel_psnr": statistics.mean(novel(r.G, r.ws, i) for i, r in enumerate(runs)),
                              "sec_per_image": (time.perf_counter() - t0) / images, "perceptual": runs[0].perceptual}
    return out
