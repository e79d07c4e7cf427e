"""`gan3d invert`: a photo -> the generator's latent (W or W+) and camera, and with pivotal tuning a generator
tuned around that latent; from them novel views, an orbit video and a mesh.

Method, from the papers:
- Projection is StyleGAN2's projector (Karras et al. 2020, "Analyzing and Improving the Image Quality of
  StyleGAN", Sec. 5): start at the mapping network's mean w (of 2,000 samples) (and a few random w: the one whose render is
  closest continues), Adam whose learning rate ramps up over the first 5% of the steps and down (cosine) over
  the last 25%, Gaussian noise on w that decays quadratically to zero over the first 75%, and the synthesis
  noise maps optimised with a penalty on their autocorrelation at every scale (then renormalised each step).
- W+ frees each layer's w (Abdal et al. 2019, "Image2StyleGAN").
- PTI (Roich et al. 2022, "Pivotal Tuning for Latent-based Editing of Real Images") then fine-tunes G around the
  pivot latent, with a locality term: for latents a fixed distance from the pivot towards random ones, the
  tuned G must render what the original G rendered.
- Optionally the camera's yaw and pitch are refined jointly with the latent (`fit_camera`).
Loss: mean squared error plus a perceptual distance (gan3d.metrics.similarity: LPIPS if its weights are
present, else 1 - MS-SSIM; the one used is recorded).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gan3d.errors import ConfigError, Gan3dError
from gan3d.metrics.similarity import lpips_missing_message, ms_ssim, perceptual, psnr, ssim

MODES = ("w", "wplus", "pti")
CAMERA_LR_SCALE = 0.2  # yaw, pitch (radians) and log fov move at this share of the latent's learning rate
RESIZE_FILTER = "bicubic, antialiased (torch.nn.functional.interpolate)"


@dataclass(frozen=True)
class InvertSettings:
    mode: str = "pti"  # w | wplus | pti (W+ projection, then pivotal tuning)
    steps: int = 500  # projection steps
    pti_steps: int = 350
    lr: float = 0.1  # projection's peak learning rate (StyleGAN2's projector)
    pti_lr: float = 3e-4
    starts: int = 4  # random w tried besides the mean w
    initial_noise: float = 0.05  # noise on w, in units of the w std, at step 0
    noise_ramp: float = 0.75  # ... decaying to 0 by this fraction of the steps
    noise_reg: float = 1e5  # weight of the noise maps' autocorrelation penalty
    perceptual_weight: float = 1.0
    locality_weight: float = 1.0  # PTI's locality term
    locality_step: float = 0.5  # locality latents: this fraction of the way from the pivot to a random w (PTI moves
    # a fixed distance alpha = 30 in StyleGAN2's 512-d W, about half the way to a random w; a fraction fits any w_dim)
    fit_camera: bool = False  # refine yaw and pitch jointly with the latent
    fit_fov: bool = False  # and the field of view (starting from the generator's)
    lpips: str = ""  # path of vgg16.pt; '' = $GAN3D_LPIPS_WEIGHTS or the cache
    seed: int = 0
    class_index: int = 0  # the class the photos show (a conditional generator)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"--mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.steps < 1 or self.pti_steps < 0 or self.starts < 0:
            raise ConfigError(f"--steps {self.steps} / pti_steps {self.pti_steps} / starts {self.starts}: "
                              "expected steps >= 1, the others >= 0")


@dataclass
class Inversion:
    """One photo's result: ws [1, num_ws, w_dim], angles [1, 3], target and reconstruction [1, 3, H, W]."""
    ws: torch.Tensor
    angles: torch.Tensor
    target: torch.Tensor
    reconstruction: torch.Tensor
    loss: list[float]  # per step: projection, then tuning
    perceptual: str
    G: Optional[torch.nn.Module] = None  # the tuned generator (PTI)
    metrics: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- inputs
def load_image(path: str | Path, resolution: int, crop: Optional[Sequence[int]] = None) -> torch.Tensor:
    """An image file of any size -> [1, 3, R, R] in [-1, 1]: cropped to (left, top, right, bottom) if given, then to
    its centred square if not square, alpha over white, resized with RESIZE_FILTER. Bad files are one line."""
    import imageio.v3 as iio

    try:
        arr = np.asarray(iio.imread(path))
    except Exception as e:  # noqa: BLE001 - imageio raises per-plugin types
        raise Gan3dError(f"{path}: not a readable image (PNG, JPEG, WebP, ...; {type(e).__name__})") from None
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise Gan3dError(f"{path}: {arr.shape[2] if arr.ndim == 3 else 1} channel(s); expected RGB or RGBA")
    img = torch.from_numpy(arr.astype(np.float32) / (65535 if arr.dtype == np.uint16 else 255)).permute(2, 0, 1)
    if img.shape[0] == 4:  # transparent parts over white, as gan3d's datasets are rendered
        img = img[:3] * img[3:] + (1 - img[3:])
    if crop is not None:
        left, top, right, bottom = crop
        if not (0 <= left < right <= img.shape[2] and 0 <= top < bottom <= img.shape[1]):
            raise Gan3dError(f"{path}: crop box {tuple(crop)} is outside the {img.shape[2]}x{img.shape[1]} image")
        img = img[:, top:bottom, left:right]
    h, w = img.shape[1:]
    if h != w:  # the centred square; --crop chooses another
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        img = img[:, top: top + side, left: left + side]
    img = F.interpolate(img[None], size=(resolution, resolution), mode="bicubic", antialias=True, align_corners=False)
    return (img.clamp(0, 1) * 2 - 1)


def camera_report(G, angles: torch.Tensor) -> tuple[dict, Optional[str]]:
    """How far a camera [3] lies from the views the generator trained on (the dataset's poses stored with its
    run, or its camera prior: render.views), and a warning when it is farther from every one of them than
    max(10 deg, 4 x their typical spacing): the generator never saw such a view."""
    from gan3d.render.views import TrainedViews

    cam, views = G.camera, TrainedViews.of(G)
    yaw, pitch = float(angles[0]), float(angles[1])
    nearest, spacing = views.nearest_deg(angles[:2]), views.spacing_deg()
    report = {"yaw": yaw, "pitch": pitch, "roll": float(angles[2]), "fov": cam.fov, "radius": cam.radius,
              "trained_views": views.source, "trained_views_summary": views.summary(),
              "nearest_trained_view_deg": nearest, "trained_view_spacing_deg": spacing}
    if views.source == "prior":
        report.update({"training_yaw": [cam.yaw_mean, cam.yaw_std], "training_pitch": [cam.pitch_mean, cam.pitch_std],
                       "deviation_std": {"yaw_std": abs(yaw - cam.yaw_mean) / max(cam.yaw_std, 1e-6),
                                         "pitch_std": abs(pitch - cam.pitch_mean) / max(cam.pitch_std, 1e-6)}})
    warn = None
    if nearest > max(10.0, 4 * spacing):
        warn = (f"camera {nearest:.0f} deg from the nearest view the generator trained on ({views.source} views: "
                f"{views.summary()}): outside what it saw; expect a poor fit")
    return report, warn


# ----------------------------------------------------------------------------------------------- rendering
def render_ws(G, ws: torch.Tensor, angles: torch.Tensor, resolution: int,
              fov: Optional[torch.Tensor] = None) -> torch.Tensor:
    """ws [B, num_ws, w_dim], angles [B, 3] -> [B, 3, R, R] (constant synthesis noise, deterministic samples)."""
    return G.render_planes(G.synthesis(ws, "const"), ws, angles, resolution, fov=fov)["image"]


def noise_layers(G) -> list[torch.nn.Module]:
    return [m for m in G.synthesis.modules() if hasattr(m, "noise_const")]


def _noise_penalty(maps: list[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2 projector's regulariser: squared autocorrelation at 1-pixel shifts, over a pyramid down to 8x8."""
    reg = torch.zeros([])
    for n in maps:
        n = n[None, None]
        while True:
            reg = reg + (n * torch.roll(n, 1, 3)).mean() ** 2 + (n * torch.roll(n, 1, 2)).mean() ** 2
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return reg


def _lr_at(t: float, peak: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    ramp = min(1.0, (1.0 - t) / rampdown)
    return peak * (0.5 - 0.5 * math.cos(ramp * math.pi)) * min(1.0, t / rampup)


# ----------------------------------------------------------------------------------------------- fitting
def project(G, target: torch.Tensor, angles: torch.Tensor, s: InvertSettings, loss_fn: Callable,
            progress: Optional[Callable[[int, float], None]] = None) -> tuple[torch.Tensor, torch.Tensor, list[float], float]:
    """Optimise ws (one w broadcast, or W+) and optionally yaw/pitch and fov so that G renders `target` [1, 3, R, R].
    Changes G's constant noise maps (G must be this image's own copy). Returns ws, angles, loss per step, fov."""
    res = target.shape[-1]
    gen = torch.Generator().manual_seed(s.seed)
    with torch.no_grad():  # the w distribution's mean and spread, from samples (as StyleGAN2's projector does)
        z = torch.randn(2000, G.cfg.z_dim, generator=gen)
        c = G.default_labels(len(z), class_index=s.class_index)
        w_all = G.map(z, c, angles.expand(len(z), -1))[:, 0]  # [N, w_dim]
        w_std = float(w_all.sub(w_all.mean(0)).square().sum(1).mean().sqrt())
        starts = [w_all.mean(0, keepdim=True)] + [w_all[i: i + 1] for i in range(s.starts)]  # mean w first
        losses = [float(loss_fn(render_ws(G, w[:, None].expand(-1, G.synthesis.num_ws, -1), angles, res), target))
                  for w in starts]
    w0 = starts[int(np.argmin(losses))]  # [1, w_dim]
    w = (w0[:, None].expand(-1, G.synthesis.num_ws, -1) if s.mode != "w" else w0).clone().requires_grad_(True)
    cam = angles[:, :2].clone().requires_grad_(s.fit_camera)
    log_fov = torch.tensor(math.log(G.camera.fov), requires_grad=s.fit_fov)  # log: a positive fov, relative steps
    noise = [m.noise_const for m in noise_layers(G)]
    for n in noise:
        n.normal_().requires_grad_(True)
    extra = ([cam] if s.fit_camera else []) + ([log_fov] if s.fit_fov else [])
    groups = [{"params": [w, *noise], "scale": 1.0}] + ([{"params": extra, "scale": CAMERA_LR_SCALE}] if extra else [])
    opt = torch.optim.Adam(groups, lr=s.lr, betas=(0.9, 0.999))
    history = []
    for step in range(s.steps):
        t = step / s.steps
        for group in opt.param_groups:
            group["lr"] = _lr_at(t, s.lr) * group["scale"]
        scale = w_std * s.initial_noise * max(0.0, 1.0 - t / s.noise_ramp) ** 2
        wn = w + torch.randn(w.shape, generator=gen) * scale
        ws = wn if s.mode != "w" else wn[:, None].expand(-1, G.synthesis.num_ws, -1)
        a = torch.cat([cam, angles[:, 2:]], 1)
        loss = loss_fn(render_ws(G, ws, a, res, log_fov.exp() if s.fit_fov else None), target).mean()
        total = loss + s.noise_reg * _noise_penalty(noise)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        with torch.no_grad():  # noise maps stay N(0, 1)
            for n in noise:
                n.sub_(n.mean()).div_(n.square().mean().sqrt())
        history.append(loss.item())
        if progress is not None:
            progress(step, history[-1])
    for n in noise:
        n.requires_grad_(False)
    ws = (w if s.mode != "w" else w[:, None].expand(-1, G.synthesis.num_ws, -1)).detach()
    return ws, torch.cat([cam.detach(), angles[:, 2:]], 1), history, float(log_fov.detach().exp())


def pivotal_tuning(G, ws: torch.Tensor, angles: torch.Tensor, target: torch.Tensor, s: InvertSettings,
                   loss_fn: Callable, progress: Optional[Callable[[int, float], None]] = None):
    """Fine-tune a copy of G so that the pivot ws renders `target`; a locality term keeps latents around the pivot
    rendering what the original G rendered (PTI, Roich et al. 2022, Sec. 3.2). Returns (tuned G, loss per step)."""
    res = target.shape[-1]
    tuned = copy.deepcopy(G).requires_grad_(True)
    tuned.mapping.requires_grad_(False)  # only synthesis and decoder move: the latent space stays the same
    params = [p for p in tuned.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=s.pti_lr)
    gen = torch.Generator().manual_seed(s.seed + 1)
    history = []
    for step in range(s.pti_steps):
        loss = loss_fn(render_ws(tuned, ws, angles, res), target).mean()
        if s.locality_weight > 0:
            z = torch.randn(1, G.cfg.z_dim, generator=gen)
            w_z = G.map(z, G.default_labels(1, class_index=s.class_index), angles)
            w_r = ws + s.locality_step * (w_z - ws)
            with torch.no_grad():
                ref = render_ws(G, w_r, angles, res)
            loss = loss + s.locality_weight * loss_fn(render_ws(tuned, w_r, angles, res), ref).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(loss.item())
        if progress is not None:
            progress(step, history[-1])
    return tuned.requires_grad_(False).eval(), history


def invert(G, images: torch.Tensor, cameras: torch.Tensor, settings: InvertSettings = InvertSettings(),
           progress: Optional[Callable[[str, int, float], None]] = None) -> list[Inversion]:
    """Invert photos [N, 3, R, R] in [-1, 1] seen from cameras [N, 3] (or [3] for all): one Inversion each.
    G is not changed (each image works on its own copy)."""
    cameras = torch.as_tensor(cameras, dtype=torch.float32).reshape(-1, 3).expand(len(images), -1)
    name, dist = perceptual(settings.lpips)
    if name != "lpips-vgg16" and not settings.lpips:
        _say_once(lpips_missing_message())

    def loss_fn(x, y):  # [B]
        return (x - y).square().flatten(1).mean(1) + settings.perceptual_weight * dist(x, y)

    out = []
    for img, cam in zip(images, cameras):
        Gi = copy.deepcopy(G).eval().requires_grad_(False)
        target, angles = img[None], cam[None]
        ws, angles, hist, fov = project(Gi, target, angles, settings, loss_fn,
                                        (lambda i, v: progress("project", i, v)) if progress else None)
        if settings.fit_fov:  # this image's generator copy renders with the fitted fov from here on
            Gi.camera = dataclasses.replace(Gi.camera, fov=fov)
        tuned = None
        if settings.mode == "pti" and settings.pti_steps > 0:
            tuned, h2 = pivotal_tuning(Gi, ws, angles, target, settings, loss_fn,
                                       (lambda i, v: progress("tune", i, v)) if progress else None)
            hist += h2
        with torch.no_grad():
            recon = render_ws(tuned or Gi, ws, angles, target.shape[-1])
        metrics = {"psnr": float(psnr(recon, target)), "ssim": float(ssim(recon, target)),
                   "ms_ssim": float(ms_ssim(recon, target)), name: float(dist(recon, target)),
                   "perceptual": name, "loss_first": hist[0], "loss_last": hist[-1]}
        out.append(Inversion(ws, angles, target, recon, hist, name, tuned if tuned is not None else Gi, metrics))
    return out


_SAID: set[str] = set()


def _say_once(line: str) -> None:
    if line not in _SAID:
        _SAID.add(line)
        print(line, flush=True)
