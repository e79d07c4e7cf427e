"""The EpiGRAF generator: StyleGAN2 mapping + synthesis to a tri-plane (nn/synthesis.py), a small MLP decoder,
and volume rendering of a full image or only the rays inside a patch (Skorokhodov et al. 2022, Sec. 3.1). No
2D upsampler: every pixel is rendered.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn as nn

from gan3d.config import CameraConfig, GeneratorConfig
from gan3d.draws import GLOBAL, Draws
from gan3d.errors import ConfigError
from gan3d.nn.layers import FullyConnected
from gan3d.nn.synthesis import MappingNetwork, TriplaneSynthesis
from gan3d.render import cameras, rays, triplane, triplane_kernel, volume
from gan3d.render.cameras import camera_cond_scalars


class Patch(NamedTuple):
    """Patch parameters per sample: scales [B, 2] and offsets [B, 2] (EpiGRAF eq. 1)."""
    scales: torch.Tensor
    offsets: torch.Tensor

    def as_vector(self) -> torch.Tensor:  # [B, 3] = (s, o_x, o_y): what D is conditioned on
        return torch.cat([self.scales[:, :1], self.offsets], dim=1)


class TriplaneDecoder(nn.Module):
    """Tri-plane features -> (raw colour, raw density): 2-layer MLP, 64 hidden, leaky ReLU, linear output (EpiGRAF).
    Colour is linear, in the data's [-1, 1] range nominally, with no squashing (as in the seed)."""

    def __init__(self, in_dim: int, hidden: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1)
        self.hidden = nn.ModuleList(FullyConnected(i, o, activation="lrelu") for i, o in zip(dims[:-1], dims[1:]))
        self.out = FullyConnected(dims[-1], 4)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # [..., C] -> [..., 3], [..., 1]
        x = feats
        for layer in self.hidden:
            x = layer(x)
        x = self.out(x)
        return x[..., :3], x[..., 3:]


class SphereBackground(nn.Module):
    """NeRF++-style background: a small INR on inverted-sphere coordinates (x/r, y/r, z/r, 1/r), conditioned on w."""

    def __init__(self, w_dim: int, num_layers: int, hidden: int, num_samples: int):
        super().__init__()
        self.num_samples = num_samples
        self.w_proj = FullyConnected(w_dim, hidden)
        dims = [4 + hidden] + [hidden] * num_layers
        self.layers = nn.ModuleList(FullyConnected(i, o, activation="lrelu") for i, o in zip(dims[:-1], dims[1:]))
        self.out = FullyConnected(hidden, 4)

    def forward(self, origins: torch.Tensor, dirs: torch.Tensor, w: torch.Tensor, ray_end: float) -> torch.Tensor:
        """origins, dirs [B, R, 3], w [B, w_dim] -> background colour [B, R, 3] (raw, like the foreground)."""
        B, R, _ = dirs.shape
        inv_r = torch.linspace(1.0 / ray_end, 0.02, self.num_samples, device=dirs.device)  # near -> far, [S]
        radius = 1.0 / inv_r
        # ray/sphere intersection: |o + t d| = radius, far root
        od = (origins * dirs).sum(-1, keepdim=True)  # [B, R, 1]
        disc = (od.square() - origins.square().sum(-1, keepdim=True) + radius.square()).clamp(min=0)  # [B, R, S]
        t = -od + disc.sqrt()  # [B, R, S]
        pts = origins[:, :, None] + t[..., None] * dirs[:, :, None]  # [B, R, S, 3]
        inp = torch.cat([pts * inv_r[:, None], inv_r.expand(B, R, -1)[..., None]], -1)  # [B, R, S, 4]
        code = self.w_proj(w)[:, None, None].expand(B, R, self.num_samples, -1)
        x = torch.cat([inp, code], -1)
        for layer in self.layers:
            x = layer(x)
        x = self.out(x)
        return volume.integrate(x[..., :3], x[..., 3:], t)["rgb"]


class TriplaneGenerator(nn.Module):
    def __init__(self, cfg: GeneratorConfig, camera: CameraConfig, img_resolution: int, c_dim: int = 0):
        super().__init__()
        self.cfg, self.camera, self.img_resolution, self.c_dim = cfg, camera, img_resolution, c_dim
        self.synthesis = TriplaneSynthesis(cfg)
        cond_dim = c_dim + (2 if cfg.camera_cond else 0)
        self.mapping = MappingNetwork(cfg.z_dim, cond_dim, cfg.w_dim, self.synthesis.num_ws, cfg.mapping_layers)
        self.decoder = TriplaneDecoder(cfg.triplane_channels, cfg.mlp_hidden, cfg.mlp_layers)
        self.background = (SphereBackground(cfg.w_dim, cfg.bg.num_layers, cfg.bg.hidden_dim, cfg.bg.num_samples)
                           if cfg.bg.enabled else None)
        self.triplane_kernel = False  # training.triplane_kernel sets it on the trained copy (nn.use_triplane_kernel)

    def default_labels(self, n: int, device="cpu", class_index: int = 0) -> Optional[torch.Tensor]:
        """One class (0 unless given) as one-hot labels [n, c_dim] for a conditional generator, None for an
        unconditional one (check_class says which classes exist)."""
        if not self.c_dim:
            return None
        return torch.nn.functional.one_hot(torch.full((n,), class_index, dtype=torch.long), self.c_dim).float().to(device)

    def check_class(self, class_index: int, flag: str = "--class") -> None:
        """A class to render or invert must be one of the model's; an unconditional model has none to choose."""
        if class_index and not self.c_dim:
            raise ConfigError(f"{flag} {class_index}: this model is unconditional (trained without labels)")
        if self.c_dim and not 0 <= class_index < self.c_dim:
            raise ConfigError(f"{flag} {class_index}: this model has {self.c_dim} classes (0-{self.c_dim - 1})")

    # ----------------------------------------------------------------------------------- latent -> planes
    def map(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, cond_angles: Optional[torch.Tensor] = None,
            truncation_psi: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
        parts = []
        if self.c_dim:
            parts.append(c)
        if self.cfg.camera_cond:
            parts.append(camera_cond_scalars(cond_angles))
        cond = torch.cat(parts, dim=1) if parts else None
        return self.mapping(z, cond, truncation_psi, update_w_avg)

    # ----------------------------------------------------------------------------------- planes -> pixels
    def _render_rays(self, planes, ws, origins, dirs, density_noise: float, perturb: bool,
                     draws: Draws) -> dict[str, torch.Tensor]:
        """Coarse + importance samples for R rays: origins, dirs [B, R, 3] -> rgb [B, R, 3], depth [B, R, 1].

        The seed's hierarchical sampling: stratified coarse depths (jittered while training), their weights
        (with density noise) give a pdf for the fine depths (random while training, evenly spaced quantiles
        otherwise), and all samples are sorted and integrated together. Without a background model the
        last interval is 1e10, so every ray ends opaque; with one (or render.open_back) it is 1e-3 and the
        background is added with the transmittance in front of the last sample.
        """
        r, cam = self.cfg.render, self.camera
        B, R, _ = dirs.shape
        last_delta = 1e-3 if self.background is not None or r.open_back else 1e10

        def evaluate(depths):  # [B, R, S] -> rgb [B, R, S, 3], sigma [B, R, S, 1]
            S = depths.shape[-1]
            pts = origins[:, :, None] + depths[..., None] * dirs[:, :, None]  # [B, R, S, 3]
            lookup = triplane_kernel.sample if self.triplane_kernel else triplane.sample_triplane
            feats = lookup(planes, pts.reshape(B, R * S, 3) / r.cube_scale)  # [B, R*S, C]
            rgb, sigma = self.decoder(feats)
            return rgb.reshape(B, R, S, 3), sigma.reshape(B, R, S, 1)

        z = rays.stratified_depths((B, R), r.num_coarse, cam.ray_start, cam.ray_end, perturb, draws, dirs.device)
        rgb, sigma = evaluate(z)
        if r.num_fine > 0:
            with torch.no_grad():
                coarse = volume.integrate(rgb, sigma, z, density_noise, last_delta, draws, "density_noise_coarse")
            z_fine = rays.importance_depths(z, coarse["weights"], r.num_fine, not perturb, draws)
            rgb_f, sigma_f = evaluate(z_fine)
            z, order = torch.sort(torch.cat([z_fine, z], -1), dim=-1)  # [B, R, Sf+S]
            rgb = torch.gather(torch.cat([rgb_f, rgb], -2), -2, order[..., None].expand(-1, -1, -1, 3))
            sigma = torch.gather(torch.cat([sigma_f, sigma], -2), -2, order[..., None])
        out = volume.integrate(rgb, sigma, z, density_noise, last_delta, draws,
                               "density_noise_fine" if r.num_fine > 0 else "density_noise_coarse")
        if self.background is not None:
            bg = self.background(origins, dirs, ws[:, -1], cam.ray_end)
            out["rgb"] = out["rgb"] + out["final_transmittance"] * bg
        if r.white_back:  # white (1 in the data's [-1, 1] range) behind whatever did not absorb the ray
            out["rgb"] = out["rgb"] + (1 - out["opacity"])
        return out

    def render_planes(self, planes: torch.Tensor, ws: torch.Tensor, angles: torch.Tensor, resolution: Optional[int] = None,
               patch: Optional[Patch] = None, density_noise: float = 0.0,
               stochastic: Optional[bool] = None, fov: Optional[torch.Tensor] = None,
               draws: Draws = GLOBAL) -> dict[str, torch.Tensor]:
        """Render tri-planes from cameras `angles` [B, 3]: image [B, 3, H, W] (nominally [-1, 1]), depth [B, 1, H, W].

        With `patch`, only the rays of that patch are cast (resolution = the patch's pixel count per side).
        Rays are rendered in chunks of max_batch_res**2 to bound memory at full resolution. `stochastic`
        (default: training mode) jitters the coarse depths and draws the importance samples at random, as the
        seed does while training; otherwise both are deterministic. `fov` (degrees, a 0-dim tensor) replaces the
        camera's, differentiably (inversion fits it).
        """
        B = angles.shape[0]
        res = resolution or self.img_resolution
        dirs_cam = rays.ray_directions(res, self.camera.fov if fov is None else fov, patch.scales if patch else None,
                                       patch.offsets if patch else None, batch=B, device=angles.device)  # [B, R, 3]
        # a pose's 4th value is its own distance from the look-at point (EG3D's cameras); else the configured one
        radius = angles[:, 3:4] if angles.shape[1] > 3 else self.camera.radius
        roll = angles[:, 2:3] if self.camera.use_roll else torch.zeros_like(angles[:, 2:3])  # the seed ignores roll
        c2w = cameras.cam2world_matrix(torch.cat([angles[:, :2], roll], 1), radius)  # [B, 4, 4]
        stochastic = self.training if stochastic is None else stochastic
        origins, dirs = rays.world_rays(c2w, dirs_cam)
        if self.triplane_kernel:  # one layout change for all chunks and both sample sets, if the planes need it
            planes = triplane_kernel.channels_last(planes)
        chunk = self.cfg.render.max_batch_res ** 2
        outs = [self._render_rays(planes, ws, origins[:, i:i + chunk], dirs[:, i:i + chunk], density_noise,
                                   stochastic, draws)
                for i in range(0, dirs.shape[1], chunk)]
        rgb = torch.cat([o["rgb"] for o in outs], 1)  # [B, R, 3]
        depth = torch.cat([o["depth"] for o in outs], 1)  # [B, R, 1]
        image = rgb.transpose(1, 2).reshape(B, 3, res, res)  # row 0 = top
        return {"image": image, "depth": depth.transpose(1, 2).reshape(B, 1, res, res)}

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor], angles: torch.Tensor, patch: Optional[Patch] = None,
                resolution: Optional[int] = None, truncation_psi: float = 1.0, noise_mode: str = "const",
                density_noise: float = 0.0, cond_angles: Optional[torch.Tensor] = None,
                update_w_avg: bool = False, draws: Draws = GLOBAL, stochastic: Optional[bool] = None) -> torch.Tensor:
        """z [B, z_dim], c [B, c_dim], angles [B, 3] -> image [B, 3, res, res], nominally in [-1, 1].
        `stochastic`: random ray samples (default: in training mode; see render_planes)."""
        ws = self.map(z, c, angles if cond_angles is None else cond_angles, truncation_psi, update_w_avg)
        planes = self.synthesis(ws, noise_mode, draws)
        return self.render_planes(planes, ws, angles, resolution, patch, density_noise, stochastic,
                                  draws=draws)["image"]

    @torch.no_grad()
    def render(self, seeds, cameras: torch.Tensor, c: Optional[torch.Tensor] = None, truncation_psi: float = 1.0,
               resolution: Optional[int] = None) -> torch.Tensor:
        """Images of latents (a list of int seeds, or z [N, z_dim]) from cameras [N, 3] (or [3] for all):
        [N, 3, H, W] in [-1, 1], noise fixed, chunked rendering."""
        if isinstance(seeds, torch.Tensor):
            z = seeds
        else:
            z = torch.stack([torch.randn(self.cfg.z_dim, generator=torch.Generator().manual_seed(int(s)))
                             for s in seeds])
        device = next(self.parameters()).device
        z = z.to(device)
        cameras = torch.as_tensor(cameras, dtype=torch.float32, device=device)
        cameras = cameras.expand(len(z), -1) if cameras.ndim == 1 or len(cameras) == 1 else cameras
        if c is None and self.c_dim:
            c = self.default_labels(len(z), device)
        return self(z, c, cameras, resolution=resolution, truncation_psi=truncation_psi, noise_mode="const")
