"""The scale/location-aware patch discriminator (EpiGRAF Sec. 3.3), structured as the seed builds it.

A StyleGAN2 residual D at patch resolution with `log2(image_res / patch_res)` extra blocks at the start
(no downsampling), so D has the capacity of a full-resolution D. The patch parameters (s_x, o_x, o_y) are
encoded (Fourier features + a learned embedding of the rounded value, `ScalarEncoder`); one mapping network
turns that code into the hyper-modulation code h, which scales the input channels of every block's second
conv by 1 + tanh(affine(h)); a second mapping network turns [class label, code] into the projection head's
vector. `seed_parity/README.md` (shared) lists the structure; tests/test_parity.py checks it numerically.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from gan3d.config import DiscriminatorConfig
from gan3d.nn.layers import Conv2d, FullyConnected, conv_precision, minibatch_std, normalize_2nd_moment
from gan3d.render.cameras import camera_cond_scalars

PATCH_X_MULTIPLIER = 1000.0  # patch params in [0, 1] are encoded as t = 1000 x
PATCH_EMBED_DIM = 256  # learned embedding of round(t), one table shared by the three coordinates


class ScalarEncoder(nn.Module):
    """[B, K] scalars in [0, 1] -> [B, K * (2 F + E)]: per coordinate t = m x, [sin(f_k t)]_k, [cos(f_k t)]_k and
    a learned embedding of round(t), coordinate-major. f_k = pi 2^k / T for k < log2 T, T = 2^ceil(log2 m)."""

    def __init__(self, num_coords: int = 3, multiplier: float = PATCH_X_MULTIPLIER, embed_dim: int = PATCH_EMBED_DIM):
        super().__init__()
        self.num_coords, self.multiplier = num_coords, multiplier
        period = 2 ** math.ceil(math.log2(multiplier))
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(int(math.log2(period))) / period)  # [F]
        self.embed = nn.Embedding(int(math.ceil(multiplier)) + 1, embed_dim) if embed_dim else None
        self.dim = num_coords * (2 * len(self.freqs) + embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        t = x.float() * self.multiplier  # [B, K]
        angles = t[:, :, None] * self.freqs  # [B, K, F]
        parts = [angles.sin(), angles.cos()]
        if self.embed is not None:
            parts.append(self.embed(t.round().long()))  # round half to even, as torch rounds; [B, K, E]
        return torch.cat(parts, dim=2).reshape(B, self.dim)


class CodeMapping(nn.Module):
    """StyleGAN2 mapping network without a latent: embed (linear, lr 1) -> 1/rms normalisation -> `num_layers`
    leaky-ReLU FCs with lr multiplier 0.01. [B, in_dim] -> [B, out_dim]."""

    def __init__(self, in_dim: int, out_dim: int, num_layers: int = 2, lr_multiplier: float = 0.01):
        super().__init__()
        self.embed = FullyConnected(in_dim, out_dim)
        self.layers = nn.ModuleList(FullyConnected(out_dim, out_dim, activation="lrelu", lr_multiplier=lr_multiplier)
                                    for _ in range(num_layers))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        x = normalize_2nd_moment(self.embed(c))
        for layer in self.layers:
            x = layer(x)
        return x


class DiscriminatorBlock(nn.Module):
    """StyleGAN2 'resnet' D block; `down=1` for EpiGRAF's extra full-resolution start blocks; conv1 hyper-modulated."""

    def __init__(self, tmp_ch: int, out_ch: int, mod_dim: int, down: int, first: bool):
        super().__init__()
        self.fromrgb = Conv2d(3, tmp_ch, 1, activation="lrelu") if first else None
        self.conv0 = Conv2d(tmp_ch, tmp_ch, 3, activation="lrelu")
        self.conv1 = Conv2d(tmp_ch, out_ch, 3, activation="lrelu", down=down, mod_dim=mod_dim)
        self.skip = Conv2d(tmp_ch, out_ch, 1, bias=False, down=down, conv_clamp=None)
        self.dtype = torch.float32  # fp16 for the top blocks under training.precision 'reference' (use_fp16_blocks)

    def forward(self, x: Optional[torch.Tensor], img: torch.Tensor, h: Optional[torch.Tensor]) -> torch.Tensor:
        if x is not None:
            x = x.to(self.dtype)
        if self.fromrgb is not None:
            x = self.fromrgb(img.to(self.dtype))
        y = self.skip(x, gain=math.sqrt(0.5))
        return y + self.conv1(self.conv0(x), h, gain=math.sqrt(0.5))


class PatchDiscriminator(nn.Module):
    def __init__(self, cfg: DiscriminatorConfig, img_resolution: int, patch_resolution: int, c_dim: int = 0):
        super().__init__()
        self.cfg, self.c_dim = cfg, c_dim
        self.patch_resolution = patch_resolution
        self.num_extra = int(np.log2(img_resolution // patch_resolution))
        # blocks are named by the resolution a full-size D would have there: image res .. 8
        top = patch_resolution * 2 ** self.num_extra
        self.block_resolutions = [2 ** i for i in range(int(np.log2(top)), 2, -1)]
        ch = lambda r: min(cfg.channel_base // r, cfg.channel_max)  # noqa: E731
        self.cmap_dim = cfg.cmap_dim or ch(4)
        self.patch_encoder = ScalarEncoder()
        mod_dim = cfg.hyper_mod_dim if cfg.hyper_mod else 0
        self.hyper_mapping = CodeMapping(self.patch_encoder.dim, mod_dim) if cfg.hyper_mod else None
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(ch(r), ch(r // 2), mod_dim, down=1 if i < self.num_extra else 2, first=i == 0)
            for i, r in enumerate(self.block_resolutions))
        # the projection head's vector from [class label, patch code, camera scalars]
        # camera conditioning as the seed's D does it by default: Fourier features of the turn fractions (t = 64 x)
        self.camera_encoder = ScalarEncoder(2, 64.0, embed_dim=0) if cfg.camera_cond else None
        head_in = c_dim + self.patch_encoder.dim + (self.camera_encoder.dim if cfg.camera_cond else 0)
        self.head_mapping = CodeMapping(head_in, self.cmap_dim)
        c4 = ch(4)
        self.epilogue_conv = Conv2d(c4 + cfg.mbstd_channels, c4, 3, activation="lrelu")
        self.epilogue_fc = FullyConnected(c4 * 16, c4, activation="lrelu")
        self.out = FullyConnected(c4, self.cmap_dim)
        self.compute_dtype = torch.float32  # autocast dtype of the blocks (bf16); the epilogue stays fp32

    def use_fp16_blocks(self, num_fp16_res: int = 4) -> list[int]:
        """Run the blocks of the `num_fp16_res` highest resolutions in fp16, as the reference's D does on a GPU
        (networks_discriminator.py:203,237: blocks at >= max(2^(log2 top + 1 - n), 8), top = the image resolution
        its extra start blocks stand for). Returns those blocks' resolutions."""
        cut = max(2 ** (int(np.log2(self.block_resolutions[0])) + 1 - num_fp16_res), 8)
        for r, block in zip(self.block_resolutions, self.blocks):
            block.dtype = torch.float16 if r >= cut else torch.float32
        return [r for r in self.block_resolutions if r >= cut]

    def forward(self, img: torch.Tensor, patch_params: torch.Tensor, c: Optional[torch.Tensor] = None,
                angles: Optional[torch.Tensor] = None) -> torch.Tensor:
        """img [B, 3, P, P], patch_params [B, 3] = (s_x, o_x, o_y), c [B, c_dim], angles [B, 3] -> logits [B, 1]."""
        code = self.patch_encoder(patch_params)  # [B, 3 * 276]
        h = self.hyper_mapping(code) if self.hyper_mapping is not None else None  # [B, hyper_mod_dim]
        x = None
        with conv_precision(self.compute_dtype, img.device):
            for block in self.blocks:
                x = block(x, img, h)  # [B, C4, 4, 4] at the end
        x = minibatch_std(x.float(), self.cfg.mbstd_group, self.cfg.mbstd_channels)
        x = self.epilogue_fc(self.epilogue_conv(x).flatten(1))  # [B, C4]
        x = self.out(x)  # [B, cmap_dim]
        cond = [code]
        if self.c_dim:
            cond.insert(0, c)
        if self.camera_encoder is not None:
            cond.append(self.camera_encoder(camera_cond_scalars(angles)))
        cmap = self.head_mapping(torch.cat(cond, dim=1))  # [B, cmap_dim]
        # projection discriminator (Miyato & Koyama 2018; StyleGAN2-ADA conditional D)
        return (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
