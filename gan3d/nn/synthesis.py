"""Latent -> tri-plane: the StyleGAN2 mapping network and a 'skip' synthesis network whose RGB output is the three
feature planes (EpiGRAF's tri-plane generator, Sec. 3.1)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from gan3d.config import GeneratorConfig
from gan3d.draws import GLOBAL, Draws
from gan3d.nn.layers import FullyConnected, ModulatedConv, conv_precision, normalize_2nd_moment
from gan3d.nn.resample import fir_filter, upsample2d


class MappingNetwork(nn.Module):
    """z (+ class / camera condition) -> w, with w_avg tracking for truncation (StyleGAN2)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 2,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.998):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, c_dim, w_dim, num_ws, w_avg_beta
        self.embed = FullyConnected(c_dim, w_dim) if c_dim > 0 else None
        dims = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        self.layers = nn.ModuleList(FullyConnected(i, o, activation="lrelu", lr_multiplier=lr_multiplier)
                                    for i, o in zip(dims[:-1], dims[1:]))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float = 1.0,
                update_w_avg: bool = False) -> torch.Tensor:  # -> [B, num_ws, w_dim]
        x = normalize_2nd_moment(z)
        if self.embed is not None:
            x = torch.cat([x, normalize_2nd_moment(self.embed(c))], dim=1)
        for layer in self.layers:
            x = layer(x)
        if update_w_avg:  # StyleGAN2-ADA / the seed: tracked on G forwards of the D phase
            self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x[:, None].repeat(1, self.num_ws, 1)


class SynthesisLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up: int = 1, name: str = ""):
        super().__init__()
        self.resolution, self.name = resolution, name  # name: the reference's, e.g. b8.conv0 (its noise draw)
        self.conv = ModulatedConv(in_ch, out_ch, w_dim, 3, up=up)
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str, draws: Draws = GLOBAL) -> torch.Tensor:
        noise = None  # added before bias + activation, as StyleGAN2 does
        if noise_mode == "random":
            shape = (x.shape[0], 1, self.resolution, self.resolution)
            noise = draws.normal(f"synth_noise/{self.name}", shape, x.device) * self.noise_strength
        elif noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        return self.conv(x, w, noise)


class SynthesisBlock(nn.Module):
    """One resolution of the StyleGAN2 'skip' synthesis network; ToRGB outputs tri-plane channels."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, out_channels: int):
        super().__init__()
        self.resolution = resolution
        if in_ch == 0:
            self.const = nn.Parameter(torch.randn(out_ch, resolution, resolution))
            self.conv0 = None
        else:
            self.conv0 = SynthesisLayer(in_ch, out_ch, w_dim, resolution, up=2, name=f"b{resolution}.conv0")
        self.conv1 = SynthesisLayer(out_ch, out_ch, w_dim, resolution, name=f"b{resolution}.conv1")
        self.torgb = ModulatedConv(out_ch, out_channels, w_dim, 1, activation="linear", demodulate=False, conv_clamp=256)
        self.register_buffer("resample_filter", fir_filter(), persistent=False)
        self.num_ws = 2 if in_ch == 0 else 3  # conv(s) + torgb; torgb shares the next block's first w

    def forward(self, x, img, ws: torch.Tensor, noise_mode: str, draws: Draws = GLOBAL):
        i = 0
        if self.conv0 is None:
            x = self.const[None].repeat(ws.shape[0], 1, 1, 1)
        else:
            x = self.conv0(x, ws[:, i], noise_mode, draws)
            i += 1
        x = self.conv1(x, ws[:, i], noise_mode, draws)
        y = self.torgb(x, ws[:, i + 1])
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class TriplaneSynthesis(nn.Module):
    """ws -> tri-plane [B, 3, C, T, T] via StyleGAN2 blocks from 4x4 to T."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.plane_channels = cfg.triplane_channels
        res_log2 = int(np.log2(cfg.triplane_resolution))
        self.resolutions = [2 ** i for i in range(2, res_log2 + 1)]
        ch = {r: min(cfg.channel_base // r, cfg.channel_max) for r in self.resolutions}
        self.blocks = nn.ModuleList()
        for r in self.resolutions:
            self.blocks.append(SynthesisBlock(0 if r == 4 else ch[r // 2], ch[r], cfg.w_dim, r, 3 * cfg.triplane_channels))
        # each block consumes its convs' ws; the torgb w is shared with the next block's first conv (StyleGAN2)
        self.num_ws = sum(1 if r == 4 else 2 for r in self.resolutions) + 1
        self.compute_dtype = torch.float32  # training.precision sets it on the trained copy; renders stay fp32
        self.channels_last_planes = False  # planes with contiguous texels, as the tri-plane kernel reads them

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", draws: Draws = GLOBAL) -> torch.Tensor:
        x = img = None
        w_idx = 0
        with conv_precision(self.compute_dtype, ws.device):
            for block in self.blocks:
                n = 1 if block.conv0 is None else 2
                x, img = block(x, img, ws[:, w_idx: w_idx + n + 1], noise_mode, draws)
                w_idx += n
        B, _, T, _ = img.shape
        if self.channels_last_planes:  # the same values; inside a compiled graph the layout comes with the last add
            img = img.contiguous(memory_format=torch.channels_last)
        return img.float().reshape(B, 3, self.plane_channels, T, T)  # [B, 3, C, T, T], fp32 for rendering
