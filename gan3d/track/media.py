"""Sample grids and orbit videos of a generator (G_ema, fixed seeds)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gan3d.metrics import to_uint8


def image_grid(images: torch.Tensor, cols: int = 0) -> np.ndarray:
    """uint8 [N, 3, H, W] -> uint8 [rows*H, cols*W, 3]."""
    n, _, h, w = images.shape
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, img in enumerate(images.numpy()):
        r, c = divmod(i, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = img.transpose(1, 2, 0)
    return grid


@torch.no_grad()
def orbit_frames(G, z: torch.Tensor, c, angles: torch.Tensor) -> torch.Tensor:
    """Render each latent from every camera: uint8 [T, 3, H, cols*W] (latents side by side)."""
    ws = G.map(z, c, angles[:1].expand(len(z), -1))
    planes = G.synthesis(ws, "const")
    frames = []
    for a in angles:
        img = G.render_planes(planes, ws, a[None].expand(len(z), -1).to(z.device))["image"]
        img = to_uint8(img).cpu()
        frames.append(torch.cat(list(img), dim=-1))
    return torch.stack(frames)


def save_png(grid: np.ndarray, path: str | Path) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return Path(path)


def save_gif(frames: torch.Tensor, path: str | Path, fps: int = 10) -> Path:
    """uint8 [T, 3, H, W] -> looping GIF (PIL only; MP4 needs an encoder package)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ims = [Image.fromarray(f.numpy().transpose(1, 2, 0)) for f in frames]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0)
    return Path(path)
