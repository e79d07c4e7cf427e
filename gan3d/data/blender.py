"""3D assets -> a multi-view gan3d dataset, rendered with Blender's `bpy` package (optional extra `gan3d[render]`).

One asset at a time, in whatever process calls `render_asset` (`gan3d dataset render` runs one Ray task per
asset, gan3d.orchestrate.assets): the scene is reset, the asset imported (.glb/.gltf, .obj, .fbx, .ply, .stl, or the objects
of a .blend), moved and scaled so that its bounding box's circumscribed sphere fills the frame (`fill` of the
half-width at the camera radius), lit by lights fixed in the world so every view sees the same lighting (`studio`,
the default: a dimmer sky, a key sun and an opposite fill; `neutral`: a white sky and one sun from above; the
objects learn their shape sooner under studio, docs/OBJECTS.md), and seen from cameras drawn from gan3d's own
camera samplers (`sample_camera_angles`, e.g. the Plants/Food presets' spherical-uniform yaw in [-pi, pi] and
pitch in [0, pi]). Each finished asset leaves its PNGs and a `done.json` (views with their angles, the
normalisation, renderer and timing), so a rerun skips it.

Axes: gan3d's world is y-up, Blender's z-up: a gan3d point (x, y, z) is Blender's (x, -z, y), which is also how
Blender's glTF and OBJ importers place y-up files, so gan3d coordinates equal the asset file's own. Camera axes
are OpenGL's in both (looking down -z, y up). gan3d's rays go through pixel *centres* placed on [-1, 1] (the
reference's align_corners convention), so Blender's field of view is widened by (R / (R - 1)) in tan(fov / 2):
pixel centres then coincide with gan3d's rays exactly.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gan3d.config import CameraConfig
from gan3d.draws import seeded
from gan3d.errors import ConfigError, Gan3dError
from gan3d.render.cameras import cam2world_matrix, sample_camera_angles, wrap_yaw

ASSET_EXTS = (".glb", ".gltf", ".obj", ".fbx", ".ply", ".stl", ".blend")
# files that travel with assets (materials, buffers, textures, notes): not assets, and not worth a word
SIDECARS = (".mtl", ".bin", ".png", ".jpg", ".jpeg", ".tga", ".bmp", ".tif", ".tiff", ".exr", ".hdr", ".webp",
            ".ktx2", ".txt", ".md", ".json", ".license", ".zip")
ENGINES = {"cycles": "CYCLES", "eevee": "BLENDER_EEVEE_NEXT"}
BACKGROUNDS = ("white", "transparent")
DONE = "done.json"
# Lights, fixed in the world so that every view of an asset sees the same shading: (sky strength, suns as
# (strength, tilt from the zenith in degrees, azimuth in degrees)).
LIGHTS = {
    "neutral": (0.6, [(2.0, 30.0, 20.0)]),  # a white sky and one sun from above
    "studio": (0.25, [(3.0, 45.0, 35.0), (0.8, 70.0, 215.0)]),  # a dimmer sky, a key and an opposite fill
}
G2B = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # gan3d (y-up) -> Blender (z-up) axes


def plants_camera() -> CameraConfig:
    """The Plants/Food presets' cameras (REFERENCE.md): fov 30, radius 1, spherical-uniform over the sphere."""
    return CameraConfig(fov=30.0, radius=1.0, ray_start=0.75, ray_end=1.25, dist="spherical_uniform", yaw_mean=0.0,
                        yaw_std=math.pi, pitch_mean=math.pi / 2, pitch_std=math.pi / 2)


@dataclass(frozen=True)
class RenderSettings:
    views: int = 64  # per asset
    resolution: int = 256
    camera: CameraConfig = field(default_factory=plants_camera)
    engine: str = "cycles"
    samples: int = 64
    background: str = "white"
    fill: float = 0.97  # the asset's bounding sphere, as a share of the frame's half-width at the camera radius
    seed: int = 0
    light: str = "studio"  # LIGHTS; studio's contrast teaches shape sooner than neutral's (docs/OBJECTS.md)

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine {self.engine!r}: expected one of {', '.join(ENGINES)}")
        if self.light not in LIGHTS:
            raise ConfigError(f"--light {self.light!r}: expected one of {', '.join(LIGHTS)}")
        if self.background not in BACKGROUNDS:
            raise ConfigError(f"--background {self.background!r}: expected one of {', '.join(BACKGROUNDS)}")
        if self.camera.dist == "dataset":
            raise ConfigError("--camera 'dataset': a render draws its own cameras; expected a distribution")
        if self.views < 1 or self.resolution < 2 or self.samples < 1:
            raise ConfigError(f"--views-per-asset {self.views} / --resolution {self.resolution} / --samples "
                              f"{self.samples}: expected >= 1 / >= 2 / >= 1")

    @property
    def blender_fov(self) -> float:
        """Blender's horizontal field of view (radians) whose pixel centres are gan3d's rays (module docstring)."""
        r = self.resolution
        return 2 * math.atan(math.tan(math.radians(self.camera.fov) / 2) * r / (r - 1))


def require_bpy():
    try:
        import bpy
    except ImportError as e:
        raise Gan3dError(f"rendering assets needs Blender's Python module: pip install 'gan3d[render]' "
                         f"(bpy 4.2 on Python 3.11) ({e})") from None
    return bpy


def skipped_files(root: str | Path) -> list[str]:
    """Files under `root` that are neither assets gan3d renders nor their sidecars (e.g. a .dae or .off mesh)."""
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*")
                  if p.is_file() and p.suffix.lower() not in ASSET_EXTS + SIDECARS and not p.name.startswith("."))


def list_assets(root: str | Path) -> list[str]:
    """Asset files under `root`, as sorted POSIX paths relative to it."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder of 3D assets ({', '.join(ASSET_EXTS)})")
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix.lower() in ASSET_EXTS)
    if not found:
        raise ConfigError(f"{root}: no 3D assets found ({', '.join(ASSET_EXTS)}, any nesting)")
    return found


def asset_id(rel: str) -> str:
    """The asset's folder in the dataset: its path without the extension."""
    return rel.rsplit(".", 1)[0]


def asset_seed(rel: str, seed: int) -> int:
    """Cameras per asset from its name and the render seed: a rerun or another worker draws the same views."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{rel}".encode()).digest()[:4], "little")


@contextlib.contextmanager
def _quiet(log: Path):
    """Blender writes render progress straight to file descriptors 1 and 2: send them to `log` meanwhile."""
    log.parent.mkdir(parents=True, exist_ok=True)
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _import(bpy, path: Path) -> None:
    ext = path.suffix.lower()
    if ext in (".glb", ".gltf"):
        bpy.ops.import_scene.gltf(filepath=str(path))
    elif ext == ".obj":
        bpy.ops.wm.obj_import(filepath=str(path))
    elif ext == ".fbx":
        bpy.ops.import_scene.fbx(filepath=str(path))
    elif ext == ".ply":
        bpy.ops.wm.ply_import(filepath=str(path))
    elif ext == ".stl":
        bpy.ops.wm.stl_import(filepath=str(path))
    else:  # .blend: every object of the file
        with bpy.data.libraries.load(str(path), link=False) as (src, dst):
            dst.objects = list(src.objects)
        for obj in dst.objects:
            if obj is not None and obj.type != "CAMERA" and obj.type != "LIGHT":
                bpy.context.scene.collection.objects.link(obj)
    if not any(o.type == "MESH" for o in bpy.context.scene.objects):
        raise Gan3dError(f"{path}: no mesh in this file")


def _normalise(bpy, s: RenderSettings) -> dict:
    """Move the meshes' bounding-box centre to the origin and scale their circumscribed sphere to fill the frame.
    Returns centre and scale in gan3d coordinates (= the asset file's own for glTF / OBJ)."""
    from mathutils import Matrix

    pts = np.concatenate([np.array([o.matrix_world @ v.co for v in o.data.vertices])
                          for o in bpy.context.scene.objects if o.type == "MESH" and len(o.data.vertices)])
    lo, hi = pts.min(0), pts.max(0)
    center = (lo + hi) / 2
    half_diag = float(np.linalg.norm(hi - lo) / 2) or 1.0
    target = s.camera.radius * math.sin(math.radians(s.camera.fov) / 2) * s.fill
    scale = target / half_diag
    T = Matrix.Diagonal((scale, scale, scale, 1.0)) @ Matrix.Translation(tuple(-center))
    for o in bpy.context.scene.objects:
        if o.parent is None:
            o.matrix_world = T @ o.matrix_world
    return {"center": (G2B.T @ center).tolist(), "scale": scale, "bbox_size": (np.abs(G2B.T @ (hi - lo))).tolist()}


def _setup(bpy, s: RenderSettings):
    scene = bpy.context.scene
    cam = bpy.data.objects.new("gan3d_camera", bpy.data.cameras.new("gan3d_camera"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    cam.data.sensor_fit = "HORIZONTAL"
    cam.data.angle = s.blender_fov
    cam.data.clip_start, cam.data.clip_end = 1e-3, 100.0
    scene.render.engine = ENGINES[s.engine]
    if s.engine == "cycles":
        scene.cycles.device = "CPU"
        scene.cycles.samples = s.samples
    scene.render.resolution_x = scene.render.resolution_y = s.resolution
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True  # composited over white below unless transparent is asked for
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.view_settings.view_transform = "Standard"  # colours as the files define them, no filmic curve
    world = bpy.data.worlds.new("gan3d_world")
    scene.world = world
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs[0].default_value = (1.0, 1.0, 1.0, 1.0)
    sky, suns = LIGHTS[s.light]
    world.node_tree.nodes["Background"].inputs[1].default_value = sky
    for i, (strength, tilt, azimuth) in enumerate(suns):
        sun = bpy.data.objects.new(f"gan3d_sun{i}", bpy.data.lights.new(f"gan3d_sun{i}", type="SUN"))
        sun.data.energy = strength
        sun.rotation_euler = (math.radians(tilt), 0.0, math.radians(azimuth))  # fixed in the world
        scene.collection.objects.link(sun)
    return cam


def camera_matrix_blender(angles: torch.Tensor, radius: float) -> np.ndarray:
    """gan3d angles [3] -> the Blender camera's 4x4 matrix_world (z-up world)."""
    c2w = cam2world_matrix(angles[None].double(), radius)[0].numpy()
    B = np.eye(4)
    B[:3, :3] = G2B
    return B @ c2w


def render_asset(root: str | Path, rel: str, parts: str | Path, s: RenderSettings, threads: int = 0) -> dict:
    """Render one asset's views into parts/<asset id>/ and write its done.json last (atomically). Returns it.
    `threads`: Cycles' CPU threads (0 = all cores)."""
    from PIL import Image

    bpy = require_bpy()
    from mathutils import Matrix  # Blender's own module, importable once bpy is
    path, out = Path(root) / rel, Path(parts) / asset_id(rel)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    angles = wrap_yaw(sample_camera_angles(s.views, s.camera, seeded(asset_seed(rel, s.seed))))  # [V, 3], roll 0
    with _quiet(Path(parts) / "blender.log"):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        _import(bpy, path)
        norm = _normalise(bpy, s)
        cam = _setup(bpy, s)
        if threads:
            bpy.context.scene.render.threads_mode = "FIXED"
            bpy.context.scene.render.threads = threads
        views = []
        for i, a in enumerate(angles):
            cam.matrix_world = Matrix(camera_matrix_blender(a, s.camera.radius).tolist())
            file = out / f"{i:04d}.png"
            bpy.context.scene.render.filepath = str(file)
            bpy.ops.render.render(write_still=True)
            views.append({"file": file.name, "angles": [float(v) for v in a]})
    if s.background == "white":  # transparency over white, as the Plants/Food sets were rendered
        for v in views:
            im = Image.open(out / v["file"]).convert("RGBA")
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            Image.alpha_composite(white, im).convert("RGB").save(out / v["file"])
    record = {"asset": rel, "views": views, "normalisation": norm, "renderer": f"Blender {bpy.app.version_string}",
              "engine": s.engine, "samples": s.samples, "seconds": time.perf_counter() - t0,
              "seed": asset_seed(rel, s.seed)}
    tmp = out / f".{DONE}.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, out / DONE)
    return record
