"""How close a reconstruction is to its photo: PSNR, SSIM and MS-SSIM (Wang et al. 2004; Wang, Simoncelli and
Bovik 2003), and LPIPS (Zhang et al. 2018) through NVIDIA's TorchScript VGG16 (`vgg16.pt`, the file
StyleGAN2-ADA's projector loads) when that file is present. Images are [B, 3, H, W] in [-1, 1]; every
function returns one value per image, [B].

LPIPS needs network weights that gan3d never downloads silently (same rule as the FID Inception file): a path,
$GAN3D_LPIPS_WEIGHTS or ~/.cache/gan3d/vgg16.pt. Without them inversion says so once and uses 1 - MS-SSIM.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from gan3d.errors import ConfigError
from gan3d.storage import cache_root

LPIPS_NAME = "vgg16.pt"
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, Table 1 (five scales)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB over the [-1, 1] range (peak-to-peak 2)."""
    mse = (x - y).square().flatten(1).mean(1)
    return 10 * torch.log10(4 / mse.clamp_min(1e-12))


def _gauss_filter(x: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Valid (unpadded) separable Gaussian filtering of every channel: [B, C, H, W] -> [B, C, H-size+1, W-size+1]."""
    t = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2
    g = torch.exp(-t.square() / (2 * sigma ** 2))
    g = g / g.sum()
    C = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(C, 1, 1, size), groups=C)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(C, 1, size, 1), groups=C)


def _ssim_cs(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per image, for images in [0, 1] (11-tap window, sigma 1.5)."""
    size = min(11, x.shape[-1], x.shape[-2])
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = _gauss_filter(x, size, 1.5), _gauss_filter(y, size, 1.5)
    sxx = _gauss_filter(x * x, size, 1.5) - mx * mx
    syy = _gauss_filter(y * y, size, 1.5) - my * my
    sxy = _gauss_filter(x * y, size, 1.5) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return (lum * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _ssim_cs((x + 1) / 2, (y + 1) / 2)[0]


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multi-scale SSIM over as many of the five standard scales as the image size allows (each scale halves
    it; the 11-tap window must fit), with the standard weights renormalised over the scales used."""
    x, y = (x + 1) / 2, (y + 1) / 2
    scales = max(1, min(len(MS_SSIM_WEIGHTS), 1 + int(torch.log2(torch.tensor(min(x.shape[-2:]) / 11)).floor())))
    w = torch.tensor(MS_SSIM_WEIGHTS[:scales], device=x.device, dtype=x.dtype)
    w = w / w.sum()
    out = torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
    for i in range(scales):
        s, cs = _ssim_cs(x, y)
        out = out * (s if i == scales - 1 else cs).clamp_min(1e-6) ** w[i]
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return out


def lpips_path(explicit: str = "") -> Optional[Path]:
    for cand in (explicit, os.environ.get("GAN3D_LPIPS_WEIGHTS", ""), str(cache_root() / LPIPS_NAME)):
        if cand and Path(cand).is_file():
            return Path(cand)
    if explicit:
        raise ConfigError(f"--lpips {explicit}: no such file (expected NVIDIA's TorchScript {LPIPS_NAME})")
    return None


def load_lpips(path: Path, device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """LPIPS distance with NVIDIA's TorchScript VGG16: its features at 256 px (larger images are area-resized,
    as StyleGAN2-ADA's projector does), squared L2 between the normalised feature stacks."""
    try:
        net = torch.jit.load(str(path), map_location=device).eval()
    except Exception as e:  # noqa: BLE001 - torch.jit raises several types for a file that is not TorchScript
        raise ConfigError(f"{path}: not NVIDIA's TorchScript {LPIPS_NAME} ({type(e).__name__}: {e})") from None

    def features(img: torch.Tensor) -> torch.Tensor:
        img = (img + 1) * 127.5  # the network takes [0, 255]
        if img.shape[-1] > 256:
            img = F.interpolate(img, size=(256, 256), mode="area")
        return net(img, resize_images=False, return_lpips=True)

    return lambda x, y: (features(x) - features(y)).square().sum(1)


def perceptual(lpips: str = "", device="cpu") -> tuple[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """The perceptual distance inversion uses, and its name: LPIPS when its weights are found, else 1 - MS-SSIM."""
    path = lpips_path(lpips)
    if path is not None:
        return "lpips-vgg16", load_lpips(path, device)
    return "1-ms-ssim", lambda x, y: 1 - ms_ssim(x, y)


def lpips_missing_message() -> str:
    return (f"gan3d: no LPIPS weights ({LPIPS_NAME} in $GAN3D_LPIPS_WEIGHTS or {cache_root()}); the perceptual term is "
            "1 - MS-SSIM instead (recorded in each metrics.json)")
