"""`gan3d render`: image grids, videos along camera paths, latent interpolations, density slices, and
geometry (density grid -> MRC volume, marching cubes -> PLY / OBJ meshes) of a trained generator."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from gan3d.errors import ConfigError
from gan3d.metrics import to_uint8
from gan3d.track import media

VIS = ("front_grid", "video", "video_grid", "interp", "density", "geometry")


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    out: list[int] = []
    try:
        for part in str(text).split(","):
            a, _, b = part.partition("-")
            out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected numbers and ranges like 0-15,20") from None
    return out


def camera_path(name: str, frames: int, G) -> torch.Tensor:
    """[T, 3] cameras of a named path (render.views.PATHS) around the views G trained on."""
    from gan3d.render.views import TrainedViews

    return TrainedViews.of(G).path(name, frames)


def _front(G) -> torch.Tensor:
    """[1, 3] the centre of the views G trained on."""
    from gan3d.render.views import TrainedViews

    yaw, pitch = TrainedViews.of(G).centre()
    return torch.tensor([[yaw, pitch, 0.0]])


def _latents(G, seeds: Sequence[int]) -> torch.Tensor:
    return torch.stack([torch.randn(G.cfg.z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


def _to_uint8(img: torch.Tensor) -> torch.Tensor:
    return to_uint8(img).cpu()


def write_video(frames: torch.Tensor, path: Path, fps: int) -> Path:
    """uint8 [T, 3, H, W] -> MP4 (imageio-ffmpeg, H.264) or, without an encoder, a GIF next to it."""
    try:
        import imageio.v2 as imageio

        arr = frames.numpy().transpose(0, 2, 3, 1)
        h, w = arr.shape[1:3]
        arr = np.pad(arr, ((0, 0), (0, (-h) % 16), (0, (-w) % 16), (0, 0)), mode="edge")  # codec block size
        with imageio.get_writer(path.with_suffix(".mp4"), fps=fps, codec="libx264", quality=8,
                                macro_block_size=16) as writer:
            for frame in arr:
                writer.append_data(frame)
        return path.with_suffix(".mp4")
    except (ImportError, RuntimeError, OSError) as e:
        print(f"gan3d: no MP4 encoder ({type(e).__name__}: {e}); writing a GIF instead")
        return media.save_gif(frames, path.with_suffix(".gif"), fps)


@torch.no_grad()
def density_grid(G, z: Optional[torch.Tensor], resolution: int, cube_size: float, truncation_psi: float = 1.0,
                 ws: Optional[torch.Tensor] = None, class_index: int = 0) -> np.ndarray:
    """softplus density of one latent (z [1, z_dim], or ws [1, num_ws, w_dim]) on a resolution^3 grid spanning
    [-cube_size/2, cube_size/2]^3 (world units)."""
    from gan3d.render.triplane import sample_triplane

    if ws is None:
        ws = G.map(z[:1], G.default_labels(1, class_index=class_index), _front(G), truncation_psi)
    planes = G.synthesis(ws[:1], "const")
    lin = torch.linspace(-cube_size / 2, cube_size / 2, resolution)
    grid = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3)  # [N, 3] x, y, z
    out = []
    for chunk in grid.split(2 ** 16):
        feats = sample_triplane(planes, chunk[None] / G.cfg.render.cube_scale)
        _, sigma = G.decoder(feats)
        out.append(torch.nn.functional.softplus(sigma)[0, :, 0])
    return torch.cat(out).reshape(resolution, resolution, resolution).numpy()


def export_mesh(G, seed: int, out: str | Path, resolution: int = 128, cube_size: Optional[float] = None,
                level: Optional[float] = None, truncation_psi: float = 1.0, class_index: int = 0) -> dict[str, Path]:
    """Density of `seed` -> MRC volume + marching-cubes meshes (PLY and OBJ). Returns the written paths."""
    import mcubes
    import mrcfile

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cube = cube_size or 2 * G.cfg.render.cube_scale
    z = _latents(G, [seed])
    sigma = density_grid(G, z, resolution, cube, truncation_psi, class_index=class_index)
    level = level if level is not None else float(np.percentile(sigma, 90))  # a surface whatever the scale
    paths = {"mrc": out / f"seed{seed:04d}.mrc", "ply": out / f"seed{seed:04d}.ply", "obj": out / f"seed{seed:04d}.obj"}
    with mrcfile.new(paths["mrc"], overwrite=True) as mrc:
        mrc.set_data(sigma.transpose(2, 1, 0).astype(np.float32))  # MRC is z-major
        mrc.voxel_size = cube / resolution
    verts, faces = surface(sigma, cube, level)
    write_ply(paths["ply"], verts, faces)
    mcubes.export_obj(verts, faces, str(paths["obj"]))
    return paths


def surface(sigma: np.ndarray, cube: float, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of a density grid at `level`: vertices in world coordinates [V, 3], faces [F, 3]."""
    import mcubes

    verts, faces = mcubes.marching_cubes(sigma, level)
    return verts / (sigma.shape[0] - 1) * cube - cube / 2, faces  # grid index -> world coordinates


def write_ply(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    with open(path, "w") as f:
        f.write(f"ply\nformat ascii 1.0\nelement vertex {len(verts)}\nproperty float x\nproperty float y\n"
                f"property float z\nelement face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
        np.savetxt(f, verts, fmt="%.6f")
        np.savetxt(f, np.hstack([np.full((len(faces), 1), 3), faces]), fmt="%d")


@torch.no_grad()
def render(G, vis: str, seeds: Sequence[int], out: str | Path, camera: str = "auto",
           truncation_psi: float = 1.0, resolution: Optional[int] = None, frames: int = 48, fps: int = 30,
           grid_resolution: int = 128, cube_size: Optional[float] = None, class_index: int = 0) -> list[Path]:
    """One visualisation of class `class_index` (a conditional G) into `out`; returns the files written. Camera
    paths and the front view are those of the views G trained on (render.views)."""
    if vis not in VIS:
        raise ConfigError(f"--vis {vis!r}: expected one of {', '.join(VIS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if vis == "geometry":
        return [p for s in seeds for p in export_mesh(G, s, out, grid_resolution, cube_size,
                                                       truncation_psi=truncation_psi, class_index=class_index).values()]
    path = camera_path(camera, frames, G)
    z, c = _latents(G, seeds), G.default_labels(len(seeds), class_index=class_index)
    if vis == "front_grid":
        front = _front(G).expand(len(seeds), -1)
        imgs = G.render(z, front, c=c, truncation_psi=truncation_psi, resolution=resolution)
        return [media.save_png(media.image_grid(_to_uint8(imgs)), out / "front_grid.png")]
    if vis in ("video", "video_grid"):
        ws = G.map(z, c, path[:1].expand(len(z), -1), truncation_psi)
        planes = G.synthesis(ws, "const")
        per_frame = [_to_uint8(G.render_planes(planes, ws, a[None].expand(len(z), -1), resolution)["image"])
                     for a in path]  # T x [S, 3, H, W]
        if vis == "video_grid":
            grid = [torch.from_numpy(media.image_grid(f)).permute(2, 0, 1) for f in per_frame]
            return [write_video(torch.stack(grid), out / "video_grid", fps)]
        return [write_video(torch.stack([f[i] for f in per_frame]), out / f"video_seed{s:04d}", fps)
                for i, s in enumerate(seeds)]
    if vis == "interp":  # linear interpolation in W between consecutive seeds, front view
        front = _front(G)
        ws = G.map(z, c, front.expand(len(z), -1), truncation_psi)
        steps = torch.linspace(0, 1, max(frames // max(len(seeds) - 1, 1), 2))
        imgs = []
        for a, b in zip(ws[:-1], ws[1:]):
            for t in steps:
                w = torch.lerp(a, b, t)[None]
                imgs.append(_to_uint8(G.render_planes(G.synthesis(w, "const"), w, front, resolution)["image"])[0])
        frames_t = torch.stack(imgs)
        return [write_video(frames_t, out / "interp", fps),
                media.save_png(media.image_grid(frames_t[:: max(len(frames_t) // 8, 1)], cols=8), out / "interp.png")]
    # density: axis-aligned slices through the origin of each seed's density
    tiles = []
    for i in range(len(seeds)):
        sigma = density_grid(G, z[i:i + 1], grid_resolution, cube_size or 2 * G.cfg.render.cube_scale, truncation_psi,
                             class_index=class_index)
        mid = grid_resolution // 2
        slices = [sigma[:, :, mid].T[::-1], sigma[:, mid, :].T, sigma[mid, :, :].T[::-1]]  # xy, xz, yz
        row = np.concatenate([s / max(s.max(), 1e-8) for s in slices], axis=1)
        tiles.append((row * 255).astype(np.uint8))
    img = np.concatenate(tiles, axis=0)
    return [media.save_png(np.repeat(img[..., None], 3, axis=-1), out / "density_slices.png")]
