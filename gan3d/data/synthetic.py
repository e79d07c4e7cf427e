"""A procedural multi-view dataset: random scenes of coloured primitives on a ground disc, ray-traced
from cameras drawn from the experiment's camera distribution with gan3d's own camera code, so the
poses, fov and conventions of the data are exactly those the generator renders with. Ground-truth depth
(distance along the ray; 0 = background) is stored beside the images in depth.npy.

It is the embedded default the main job trains on: one scene family, seen from the camera distribution,
which a 3D-aware generator has to model as geometry to fool D from every view.
"""
from __future__ import annotations

import json
import math
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gan3d.config import CameraConfig
from gan3d.draws import seeded
from gan3d.data.parquet import encode_png
from gan3d.errors import DatasetError
from gan3d.render.cameras import cam2world_matrix, sample_camera_angles, wrap_yaw
from gan3d.render.rays import ray_directions, world_rays

KINDS = ("primitives",)
GROUND_Y, GROUND_R = -0.1, 0.26
LIGHT = torch.nn.functional.normalize(torch.tensor([0.4, 1.0, 0.6]), dim=0)


def smoke_camera() -> CameraConfig:
    """The camera of experiments/smoke.yaml: objects within ~0.3 of the origin seen from radius 1."""
    return CameraConfig(fov=30.0, radius=1.0, ray_start=0.6, ray_end=1.4, dist="normal",
                        yaw_mean=math.pi / 2, yaw_std=0.6, pitch_mean=1.3, pitch_std=0.2)


def random_scene(rng: np.random.Generator) -> list[dict]:
    """A ground disc and 1-3 spheres or boxes resting on it, each with a random saturated colour."""
    hue = rng.uniform(0, 1, size=4)
    colours = [np.clip(np.abs((h * 6 + np.array([0, 4, 2])) % 6 - 3) - 1, 0, 1) * 0.8 + 0.15 for h in hue]
    objs = [{"kind": "disc", "y": GROUND_Y, "r": GROUND_R, "colour": np.full(3, rng.uniform(0.35, 0.6))}]
    for i in range(int(rng.integers(1, 4))):
        size = rng.uniform(0.05, 0.1)
        ang, rad = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.15)
        centre = np.array([rad * math.cos(ang), GROUND_Y + size, rad * math.sin(ang)])
        kind = "sphere" if rng.random() < 0.5 else "box"
        objs.append({"kind": kind, "centre": centre, "size": size, "colour": colours[i]})
    return objs


def _hit(obj: dict, o: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray hits: o, d [R, 3] -> distance t [R] (inf = miss), normal [R, 3]."""
    inf = torch.full_like(o[:, 0], math.inf)
    if obj["kind"] == "disc":
        t = (obj["y"] - o[:, 1]) / d[:, 1].where(d[:, 1].abs() > 1e-9, torch.full_like(d[:, 1], 1e-9))
        p = o + t[:, None] * d
        ok = (t > 0) & (p[:, 0] ** 2 + p[:, 2] ** 2 <= obj["r"] ** 2)
        n = torch.tensor([0.0, 1.0, 0.0]).expand_as(o) * torch.sign(-d[:, 1:2])
        return torch.where(ok, t, inf), n
    c = torch.as_tensor(obj["centre"], dtype=o.dtype)
    if obj["kind"] == "sphere":
        oc = o - c
        b = (oc * d).sum(-1)
        disc = b ** 2 - (oc ** 2).sum(-1) + obj["size"] ** 2
        t = -b - disc.clamp(min=0).sqrt()
        ok = (disc >= 0) & (t > 0)
        n = torch.nn.functional.normalize(o + t[:, None] * d - c, dim=-1)
        return torch.where(ok, t, inf), n
    lo, hi = c - obj["size"], c + obj["size"]  # axis-aligned box, slab test
    inv = 1.0 / torch.where(d.abs() > 1e-9, d, torch.full_like(d, 1e-9))
    t1, t2 = (lo - o) * inv, (hi - o) * inv
    tmin, axis = torch.minimum(t1, t2).max(-1)
    tmax = torch.maximum(t1, t2).min(-1).values
    ok = (tmax >= tmin) & (tmin > 0)
    n = torch.zeros_like(o).scatter_(1, axis[:, None], 1.0) * -torch.sign(d.gather(1, axis[:, None]))
    return torch.where(ok, tmin, inf), n


def render_scene(objs: list[dict], angles: torch.Tensor, camera: CameraConfig, resolution: int,
                 supersample: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """-> image uint8 [3, H, W] on white, depth float32 [H, W] (0 where no surface)."""
    c2w = cam2world_matrix(angles[None], camera.radius)
    pixel = 2.0 / (resolution - 1)
    acc = torch.zeros(resolution * resolution, 3)
    depth = None
    for k in range(supersample ** 2):  # jittered sub-pixel rays, centred on gan3d's pixel centres
        jitter = torch.tensor([[(k % supersample + 0.5) / supersample - 0.5,
                                (k // supersample + 0.5) / supersample - 0.5]]) * pixel / 2
        dirs = ray_directions(resolution, camera.fov, torch.ones(1, 2), jitter, batch=1)
        o, d = world_rays(c2w, dirs)
        o, d = o[0], d[0]  # [R, 3]
        best = torch.full_like(o[:, 0], math.inf)
        colour = torch.ones_like(o)  # white background
        for obj in objs:
            t, n = _hit(obj, o, d)
            closer = t < best
            shade = 0.35 + 0.65 * (n * LIGHT).sum(-1).clamp(min=0)
            colour = torch.where(closer[:, None], torch.as_tensor(obj["colour"], dtype=o.dtype) * shade[:, None], colour)
            best = torch.where(closer, t, best)
        acc += colour
        if depth is None or k == (supersample ** 2) // 2:
            depth = torch.where(torch.isfinite(best), best, torch.zeros_like(best))
    img = (acc / supersample ** 2).clamp(0, 1).reshape(resolution, resolution, 3)
    return ((img.numpy() * 255 + 0.5).astype(np.uint8).transpose(2, 0, 1),
            depth.reshape(resolution, resolution).numpy().astype(np.float32))


def make_synthetic(out: str | Path, n: int, resolution: int, camera: CameraConfig, kind: str = "primitives",
                   seed: int = 0) -> Path:
    """Write n images (zip if `out` ends in .zip, else a folder) with dataset.json poses and depth.npy."""
    if kind not in KINDS:
        raise DatasetError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
    if n <= 0 or resolution < 4:
        raise DatasetError(f"synthetic dataset: need n > 0 and resolution >= 4 (got n={n}, resolution={resolution})")
    out = Path(out)
    if camera.dist == "dataset":  # the data defines the poses: draw them from the configured gaussian
        camera = replace(camera, dist="normal")
    rng = np.random.default_rng(seed)
    angles = wrap_yaw(sample_camera_angles(n, camera, seeded(seed)))  # dataset.json yaws
    files, depths, poses = {}, [], {}
    for i in tqdm(range(n), desc=f"rendering synthetic {kind}", unit="img", disable=None):
        img, depth = render_scene(random_scene(rng), angles[i], camera, resolution)
        name = f"img/{i:08d}.png"
        files[name] = encode_png(img)
        depths.append(depth)
        poses[name] = [float(v) for v in angles[i]]
    meta = {"camera_angles": poses, "yaw_center": math.pi / 2,
            "synthetic": {"kind": kind, "seed": seed, "fov": camera.fov, "radius": camera.radius,
                          "background": "white", "depth": "depth.npy: float16 [N, H, W] ray distance, 0 = none"},
            "preprocessing": {"source_resolution": resolution, "resize_filter": "none", "crop": "none"}}
    depth_bytes = _npy_bytes(np.stack(depths).astype(np.float16))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".zip":
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            for name, data in files.items():
                z.writestr(name, data)
            z.writestr("dataset.json", json.dumps(meta))
            z.writestr("depth.npy", depth_bytes)
    else:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        (tmp / "dataset.json").write_text(json.dumps(meta))
        (tmp / "depth.npy").write_bytes(depth_bytes)
    tmp.rename(out)  # atomic: a half-made dataset is never mistaken for a finished one
    return out


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()
