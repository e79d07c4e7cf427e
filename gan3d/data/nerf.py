"""NeRF-synthetic / Blender / instant-ngp camera files (`transforms*.json`) -> gan3d's (yaw, pitch, roll).

The format (Mildenhall et al. 2020's synthetic scenes; instant-ngp writes the same keys): `camera_angle_x`, the
full horizontal field of view in radians, and `frames`, each with a `file_path` (often without its extension)
and a `transform_matrix`: a 4x4 camera-to-world whose camera looks down -z with y up (OpenGL axes, as gan3d's
`cam2world_matrix`). Blender's world is z-up and gan3d's is y-up: the world axis the cameras' up vectors share
is rotated onto +y. The cameras are re-centred on the point their optical axes meet, and each frame is checked
(4x4, finite, orthonormal rotation, looking at that point, no roll), with the reference's own refusals (roll,
all-zero angles, yaw outside [-pi, pi], pitch outside [0, pi]) as one-line errors naming the frame.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from gan3d.data.archive import Archive
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

    def lines(self) -> list[str]:
        x, y, z = self.center
        return [f"poses: {len(self.names)} NeRF frames, world up {self.up_axis} -> +y, re-centred on "
                f"({x:.4f}, {y:.4f}, {z:.4f})",
                f"poses: fov {self.fov:.3f} deg (camera_angle_x) = dataset.camera.fov; camera radius mean "
                f"{self.radius.mean():.4f}, std {self.radius.std():.4f} (dataset.camera.radius)"]

    def as_dict(self) -> dict:
        return {"from": "nerf", "fov": self.fov, "radius_mean": float(self.radius.mean()),
                "radius_std": float(self.radius.std()), "center": list(self.center), "up_axis": self.up_axis}


def _resolve(archive: Archive, where: str, file_path: str) -> str:
    """A frame's file_path ('./train/r_0', maybe without extension) -> the archive's image name."""
    stem = file_path.replace("\\", "/").removeprefix("./").lstrip("/")
    for cand in (stem, *(stem + ext for ext in (".png", ".jpg", ".jpeg", ".webp"))):
        if archive.has(cand):
            return cand
    raise DatasetError(f"{where}: frame '{file_path}': no such image in {archive.path}")


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
            names.append(_resolve(archive, label, path))
            labels.append(label)
            mats.append(m)
    if len(fovs) > 1:
        raise DatasetError(f"{archive.path}: the transforms files disagree on camera_angle_x: {sorted(fovs)} deg")
    return names, labels, np.stack(mats), fovs.pop()


def nerf_to_angles(archive: Archive) -> NerfPoses:
    names, labels, mats, fov = read_frames(archive)
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
    a = angles.numpy()
    for n, m, ang in zip(labels, miss, a):
        if m > AXIS_TOLERANCE_DEG:
            raise DatasetError(f"{n}: its optical axis misses the cameras' common centre by {m:.2f} deg "
                               f"(> {AXIS_TOLERANCE_DEG}): gan3d's cameras look at the object's centre")
        if abs(ang[2]) > ROLL_TOLERANCE:
            raise DatasetError(f"{n}: roll {ang[2]:.4f} rad; gan3d's cameras (like the reference's) have none")
        if not -math.pi - 1e-6 <= ang[0] <= math.pi + 1e-6 or not -1e-6 <= ang[1] <= math.pi + 1e-6:
            raise DatasetError(f"{n}: yaw {ang[0]:.4f} / pitch {ang[1]:.4f} outside [-pi, pi] / [0, pi]")
    if np.abs(a).max() < 1e-8:
        raise DatasetError(f"{archive.path}: every camera angle is zero: not a multi-view dataset")
    world_center = (W[:3, :3].T @ center).tolist()  # back in the source world's axes
    return NerfPoses(names, a.astype(np.float32), radius.numpy(), fov, tuple(world_center),
                     ("+" if sign > 0 else "-") + "xyz"[axis])
