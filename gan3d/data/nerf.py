"""NeRF-synthetic / Blender / instant-ngp camera files (`transforms*.json`) -> gan3d's (yaw, pitch, roll).

The format (Mildenhall et al. 2020's synthetic scenes; instant-ngp writes the same keys): `camera_angle_x`, the
full horizontal field of view in radians, and `frames`, each with a `file_path` (often without its extension)
and a `transform_matrix`: a 4x4 camera-to-world whose camera looks down -z with y up (OpenGL axes, as gan3d's
`cam2world_matrix`). Blender's world is z-up and gan3d's is y-up: the world axis the cameras' up vectors share
is rotated onto +y. The cameras are re-centred on the point their optical axes meet. A malformed frame (not 4x4,
not finite, not a rotation) is one line naming it; then every frame is checked against what gan3d's cameras are
(looking at that point, no roll, a distance near the others', a square image) and all that fails, over all
frames, is one line. gan3d's fov spans the outer pixel centres, NeRF's camera_angle_x the outer pixel edges: the
fov is converted at the written resolution, so a gan3d render's own transforms.json gives back its fov.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from gan3d.data.archive import Archive, image_header
from gan3d.data.convert import RADIUS_LIMIT
from gan3d.data.poses import common_lookat
from gan3d.errors import DatasetError
from gan3d.render.cameras import angles_from_cam2world

AXIS_TOLERANCE_DEG = 0.5  # an optical axis that misses the common centre by more is not an object-centred camera
ROLL_TOLERANCE = 1e-3  # radians; gan3d's cameras (and the reference's) have no roll


@dataclass
class NerfPoses:
    names: list[str]  # archive image names, in frame order
    angles: np.ndarray  # [N, 3] yaw, pitch, roll
    radius: np.ndarray  # [N] distance from the common centre
    fov: float  # degrees, full horizontal (gan3d's dataset.camera.fov)
    center: tuple[float, float, float]  # in the source world
    up_axis: str  # the source world's up axis, e.g. '+z'
    problems: list[str]  # what --allow-outliers let through
    camera_angle_x: float  # degrees, as the file gives it (to the outer pixel edges)

    def lines(self) -> list[str]:
        x, y, z = self.center
        return [f"poses: {len(self.names)} NeRF frames, world up {self.up_axis} -> +y, re-centred on "
                f"({x:.4f}, {y:.4f}, {z:.4f}); each camera keeps its own distance",
                f"poses: fov {self.fov:.3f} deg = dataset.camera.fov (camera_angle_x {self.camera_angle_x:.3f} deg "
                f"spans the outer pixel edges, gan3d's fov the outer pixel centres); camera radius mean "
                f"{self.radius.mean():.4f}, std {self.radius.std():.4f} (dataset.camera.radius)"
                ] + [f"  converted anyway (--allow-outliers): {p}" for p in self.problems]

    def as_dict(self) -> dict:
        return {"from": "nerf", "fov": self.fov, "camera_angle_x_deg": self.camera_angle_x,
                "problems": self.problems, "radius_mean": float(self.radius.mean()),
                "radius_std": float(self.radius.std()), "center": list(self.center), "up_axis": self.up_axis}


def _resolve(archive: Archive, file_path: str) -> Optional[str]:
    """A frame's file_path ('./train/r_0', maybe without extension) -> the archive's image name, or None."""
    stem = file_path.replace("\\", "/").removeprefix("./").lstrip("/")
    return next((c for c in (stem, *(stem + ext for ext in (".png", ".jpg", ".jpeg", ".webp"))) if archive.has(c)),
                None)


def read_frames(archive: Archive) -> tuple[list[str], list[str], np.ndarray, float]:
    """All `transforms*.json` at the archive's root: image names, where each frame was read ("file: frame '...'",
    for messages), cam2world [N, 4, 4] float64, fov in degrees."""
    files = sorted(n for n in archive.names if "/" not in n and n.startswith("transforms") and n.endswith(".json"))
    if not files:
        raise DatasetError(f"{archive.path}: --poses nerf needs a transforms.json (or transforms_train.json, ...) "
                           "at the top level")
    names, labels, mats, fovs = [], [], [], set()
    for f in files:
        where = archive.describe(f)
        try:
            raw = json.loads(archive.read(f))
            frames, fov = raw["frames"], float(raw["camera_angle_x"])
        except (ValueError, KeyError, TypeError):
            raise DatasetError(f"{where}: expected JSON with 'camera_angle_x' (radians) and 'frames'") from None
        if not 0 < fov < math.pi:
            raise DatasetError(f"{where}: camera_angle_x {fov!r}: expected radians in (0, pi)")
        fovs.add(round(math.degrees(fov), 6))
        for i, fr in enumerate(frames):
            label = f"{where}: frames[{i}]"
            try:
                m = np.asarray(fr["transform_matrix"], dtype=np.float64)
                path = str(fr["file_path"])
            except (KeyError, TypeError, ValueError):
                raise DatasetError(f"{label}: expected 'file_path' and a numeric 'transform_matrix'") from None
            label = f"{where}: frame '{path}'"
            if m.shape != (4, 4):
                raise DatasetError(f"{label}: transform_matrix is {m.shape}, expected 4x4")
            if not np.isfinite(m).all():
                raise DatasetError(f"{label}: transform_matrix has NaN or inf")
            R = m[:3, :3]
            if np.abs(R.T @ R - np.eye(3)).max() > 1e-3 or abs(np.linalg.det(R) - 1) > 1e-3:
                raise DatasetError(f"{label}: the rotation is not orthonormal with det +1 (det {np.linalg.det(R):.4f}): "
                                   "scaled, sheared or mirrored")
            names.append(_resolve(archive, path))
            labels.append(label)
            mats.append(m)
    missing = [label.split(": ", 1)[1].removeprefix("frame ") for n, label in zip(names, labels) if n is None]
    if missing:
        raise DatasetError(f"{archive.path}: {len(missing)} of {len(names)} frames name no image in it: "
                           f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}")
    if len(fovs) > 1:
        raise DatasetError(f"{archive.path}: the transforms files disagree on camera_angle_x: {sorted(fovs)} deg")
    return names, labels, np.stack(mats), fovs.pop()


def pixel_centre_fov(camera_angle_x: float, resolution: int) -> float:
    """NeRF's camera_angle_x (radians, the full angle to the outer pixel *edges*: focal = W / 2 / tan(x / 2)) ->
    gan3d's fov in degrees at `resolution` (the full angle between the outer pixel *centres*)."""
    return math.degrees(2 * math.atan(math.tan(camera_angle_x / 2) * (resolution - 1) / resolution))


def capture_problems(archive: Archive, names: list[str], labels: list[str], miss: np.ndarray, angles: np.ndarray,
                     radius: np.ndarray) -> list[str]:
    """What keeps a set of frames from being gan3d cameras, each check over every frame: optical axes that miss
    the common centre, roll, distances far from the median, images that are not square."""
    n, out = len(names), []

    def some(bad: np.ndarray) -> str:
        first = [labels[i].split(": ", 1)[1].removeprefix("frame ") for i in np.flatnonzero(bad)[:2]]
        return f"{int(bad.sum())} of {n} frames (e.g. {', '.join(first)})"
    off = miss > AXIS_TOLERANCE_DEG
    if off.any():
        out.append(f"optical axes of {some(off)} miss the cameras' common centre by {miss[off].min():.2f}-"
                   f"{miss[off].max():.2f} deg (> {AXIS_TOLERANCE_DEG})")
    rolled = np.abs(angles[:, 2]) > ROLL_TOLERANCE
    if rolled.any():
        out.append(f"{some(rolled)} have roll (up to {math.degrees(float(np.abs(angles[:, 2]).max())):.1f} deg, "
                   f"e.g. {angles[rolled][0, 2]:.4f} rad)")
    ratio = radius / np.median(radius)
    far = (ratio < RADIUS_LIMIT[0]) | (ratio > RADIUS_LIMIT[1])
    if far.any():
        out.append(f"{some(far)} are {radius[far].min():.2f}-{radius[far].max():.2f} from the centre, against a "
                   f"median of {np.median(radius):.2f}")
    sizes = [image_header(archive.read(name), archive.describe(name))[:2] for name in names]
    oblong = np.array([w != h for w, h in sizes])
    if oblong.any():
        w, h = sizes[int(np.flatnonzero(oblong)[0])]
        out.append(f"{int(oblong.sum())} of {n} images are not square (e.g. {w}x{h}; convert does not crop)")
    return out


def nerf_to_angles(archive: Archive, resolution: Optional[int] = None, allow_outliers: bool = False) -> NerfPoses:
    """The archive's transforms*.json -> gan3d cameras, each with its own distance from the common centre, and
    the fov at `resolution` (default: the images'). Every frame is checked for what gan3d's cameras cannot be,
    and all problems are one line; `allow_outliers` converts anyway (problems reported), except for images
    that are not square."""
    names, labels, mats, fov_x = read_frames(archive)
    c2w = torch.as_tensor(mats)
    up = c2w[:, :3, 1].mean(0)  # the world axis the cameras' up vectors share
    axis = int(up.abs().argmax())
    sign = 1.0 if up[axis] > 0 else -1.0
    # a proper rotation taking that axis to +y: +z -> +y is (x, y, z) -> (x, z, -y); others by analogy
    rot = {(2, 1.0): [[1, 0, 0], [0, 0, 1], [0, -1, 0]], (2, -1.0): [[1, 0, 0], [0, 0, -1], [0, 1, 0]],
           (1, 1.0): [[1, 0, 0], [0, 1, 0], [0, 0, 1]], (1, -1.0): [[1, 0, 0], [0, -1, 0], [0, 0, -1]],
           (0, 1.0): [[0, 1, 0], [1, 0, 0], [0, 0, -1]], (0, -1.0): [[0, -1, 0], [1, 0, 0], [0, 0, 1]]}[(axis, sign)]
    W = torch.eye(4, dtype=torch.float64)
    W[:3, :3] = torch.tensor(rot, dtype=torch.float64)
    c2w = W @ c2w
    origins, forward = c2w[:, :3, 3], -c2w[:, :3, 2]
    center = common_lookat(origins, forward)
    to_c = center - origins
    miss = torch.rad2deg(torch.asin((torch.linalg.cross(forward, to_c, dim=-1).norm(dim=-1)
                                     / to_c.norm(dim=-1)).clamp(max=1))).numpy()
    c2w = c2w.clone()
    c2w[:, :3, 3] -= center
    angles, radius = angles_from_cam2world(c2w)
    a, r = angles.numpy(), radius.numpy()
    if np.abs(a).max() < 1e-8:
        raise DatasetError(f"{archive.path}: every camera angle is zero: not a multi-view dataset")
    problems = capture_problems(archive, names, labels, miss, a, r)
    fatal = [p for p in problems if "not square" in p]
    if fatal or (problems and not allow_outliers):
        raise DatasetError(
            f"{archive.path}: not a capture gan3d can take: {'; '.join(problems)}. gan3d takes object-centred "
            f"captures: every camera looking at one centre, no roll, square images (crop them first); "
            f"nothing was written" + ("" if fatal else " (--allow-outliers converts anyway)"))
    width = image_header(archive.read(names[0]), archive.describe(names[0]))[0]
    world_center = (W[:3, :3].T @ center).tolist()  # back in the source world's axes
    return NerfPoses(names, a.astype(np.float32), r, pixel_centre_fov(math.radians(fov_x), resolution or width),
                     tuple(world_center), ("+" if sign > 0 else "-") + "xyz"[axis], problems, fov_x)
