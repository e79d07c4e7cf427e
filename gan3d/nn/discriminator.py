"""The scale/location-aware patch discriminator (EpiGRAF Sec. 3.3).

A StyleGAN2 residual D at patch resolution with log2(image_res / patch_res) extra blocks at the start
(no downsampling), so D has the capacity of a full-resolution D. The patch parameters (s, o_x, o_y) are
encoded with Fourier features plus a learned embedding of round(1000 x), mapped by an MLP to a code that
modulates D's convolutions (hypernetwork modulation) and enters the projection head with the class /
camera condition.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from gan3d.config import DiscriminatorConfig
from gan3d.nn.layers import Conv2d, FullyConnected, ModulatedConv, fourier_features, minibatch_std, normalize_2nd_moment


class ScaleEncoder(nn.Module):
    """(s, o_x, o_y) [B, 3] in [0, 1] -> code [B, code_dim]: Fourier features + embedding of round(1000 x), then an MLP."""

    def __init__(self, fourier_dim: int, code_dim: int, embed_dim: int = 64):
        super().__init__()
        self.fourier_dim = fourier_dim
        self.embed = nn.Embedding(1001, embed_dim)
        self.mlp = nn.Sequential(FullyConnected(3 * fourier_dim + 3 * embed_dim, code_dim, activation="lrelu"),
                                 FullyConnected(code_dim, code_dim, activation="lrelu"))

    def forward(self, params: torch.Tensor) -> torch.Tensor:
        idx = (params.clamp(0, 1) * 1000).round().long()  # [B, 3]
        x = torch.cat([fourier_features(params, self.fourier_dim), self.embed(idx).flatten(1)], dim=1)
        return self.mlp(x)


class DConv(nn.Module):
    """A D convolution: plain equalized-lr, or modulated by the scale code (demodulated, so the code
    re-weights input channels without changing activation magnitudes)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, code_dim: int, hyper_mod: bool, activation: str = "lrelu",
                 down: int = 1):
        super().__init__()
        self.hyper_mod = hyper_mod
        if hyper_mod:
            self.conv = ModulatedConv(in_ch, out_ch, code_dim, kernel, down=down, activation=activation)
        else:
            self.conv = Conv2d(in_ch, out_ch, kernel, activation=activation, down=down)

    def forward(self, x: torch.Tensor, code: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        return self.conv(x, code, gain=gain) if self.hyper_mod else self.conv(x, gain=gain)


class DiscriminatorBlock(nn.Module):
    """StyleGAN2 'resnet' D block; `down=1` for EpiGRAF's extra full-resolution start blocks."""

    def __init__(self, in_ch: int, tmp_ch: int, out_ch: int, code_dim: int, hyper_mod: bool, down: int, first: bool):
        super().__init__()
        self.fromrgb = Conv2d(3, tmp_ch, 1, activation="lrelu") if first else None
        self.conv0 = DConv(tmp_ch, tmp_ch, 3, code_dim, hyper_mod)
        self.conv1 = DConv(tmp_ch, out_ch, 3, code_dim, hyper_mod, down=down)
        self.skip = Conv2d(tmp_ch, out_ch, 1, bias=False, down=down)

    def forward(self, x: torch.Tensor, img: Optional[torch.Tensor], code: torch.Tensor) -> torch.Tensor:
        if self.fromrgb is not None:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x, code), code, gain=math.sqrt(0.5))
        return y + x


class PatchDiscriminator(nn.Module):
    def __init__(self, cfg: DiscriminatorConfig, img_resolution: int, patch_resolution: int, c_dim: int = 0):
        super().__init__()
        self.cfg, self.c_dim = cfg, c_dim
        self.patch_resolution = patch_resolution
        self.num_extra = int(np.log2(img_resolution // patch_resolution))
        res = [2 ** i for i in range(int(np.log2(patch_resolution)), 2, -1)]  # downsampling blocks: P .. 8
        ch = lambda r: min(cfg.channel_base // r, cfg.channel_max)  # noqa: E731
        code_dim = cfg.scale_code_dim
        self.scale_encoder = ScaleEncoder(cfg.fourier_dim, code_dim)
        blocks = []
        # extra start blocks see the patch at full patch resolution, with the channels a full-size D
        # would use at the matching image resolution (EpiGRAF keeps D's capacity)
        for i in range(self.num_extra):
            r_img = img_resolution >> i
            blocks.append(DiscriminatorBlock(ch(r_img), ch(r_img), ch(r_img >> 1), code_dim, cfg.hyper_mod, 1, i == 0))
        for i, r in enumerate(res):
            c_in = ch(r if self.num_extra == 0 else patch_resolution) if i == 0 else ch(r)
            blocks.append(DiscriminatorBlock(c_in, c_in, ch(r // 2), code_dim, cfg.hyper_mod, 2,
                                             first=(i == 0 and self.num_extra == 0)))
        self.blocks = nn.ModuleList(blocks)
        c4 = ch(4)
        cond_dim = c_dim + (3 if cfg.camera_cond else 0)
        self.cond_embed = FullyConnected(cond_dim, code_dim) if cond_dim > 0 else None
        self.cmap = nn.Sequential(FullyConnected(code_dim * (2 if cond_dim else 1), cfg.cmap_dim, activation="lrelu"),
                                  FullyConnected(cfg.cmap_dim, cfg.cmap_dim))
        self.epilogue_conv = Conv2d(c4 + cfg.mbstd_channels, c4, 3, activation="lrelu")
        self.epilogue_fc = FullyConnected(c4 * 16, c4, activation="lrelu")
        self.out = FullyConnected(c4, cfg.cmap_dim)

    def forward(self, img: torch.Tensor, patch_params: torch.Tensor, c: Optional[torch.Tensor] = None,
                angles: Optional[torch.Tensor] = None) -> torch.Tensor:
        """img [B, 3, P, P], patch_params [B, 3] = (s, o_x, o_y), c [B, c_dim], angles [B, 3] -> logits [B, 1]."""
        code = self.scale_encoder(patch_params)  # [B, code_dim]
        x = None
        for block in self.blocks:
            x = block(x, img, code)  # [B, C, 4, 4] at the end
        x = minibatch_std(x, self.cfg.mbstd_group, self.cfg.mbstd_channels)
        x = self.epilogue_fc(self.epilogue_conv(x).flatten(1))  # [B, C4]
        x = self.out(x)  # [B, cmap_dim]
        parts = [code]
        if self.cond_embed is not None:
            cond = torch.cat([t for t, on in ((c, self.c_dim > 0), (angles, self.cfg.camera_cond)) if on], dim=1)
            parts.append(normalize_2nd_moment(self.cond_embed(cond)))
        cmap = self.cmap(torch.cat(parts, dim=1))  # [B, cmap_dim]
        # projection discriminator (Miyato & Koyama 2018; StyleGAN2-ADA conditional D)
        return (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cfg.cmap_dim)
