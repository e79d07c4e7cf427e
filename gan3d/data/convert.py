"""`gan3d dataset convert`: zip / folder -> Parquet shards, with resizing and pose import (EG3D labels; NeRF
transforms.json in gan3d.data.nerf)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from PIL import Image

from gan3d.data.archive import META_FILE, Archive, check_references, decode_image, parse_metadata
from gan3d.data.poses import common_lookat, yaw_center_of
from gan3d.data.parquet import RESIZE_FILTERS, encode_png, write_shards
from gan3d.errors import DatasetError
from gan3d.render.cameras import angles_from_cam2world

# OpenCV camera axes (x right, y down, z forward) -> ours (x right, y up, z backward)
_CV_TO_GL = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))
AXIS_TOLERANCE_DEG = 0.5  # a camera whose optical axis misses the common look-at point by more is an outlier
EG3D_FOV_FACTOR = 1.414  # EG3D's FOV_to_intrinsics: fx = 1 / (tan(fov_degrees / 2) * 1.414)


@dataclass
class PoseReport:
    """What a set of imported cameras implies, and which cameras disagree with the rest."""
    radius: float  # median distance from the common look-at point
    fov: float  # gan3d's dataset.camera.fov: the full horizontal angle, degrees
    fov_eg3d: float  # the `fov_degrees` EG3D's own config would give for the same focal length
    lookat: tuple[float, float, float]  # least-squares point closest to every optical axis (EG3D world)
    max_axis_error: float  # degrees by which the worst optical axis misses the look-at point
    outliers: list[str] = field(default_factory=list)
    world_flipped: bool = False

    def lines(self) -> list[str]:
        x, y, z = self.lookat
        out = [f"poses: camera radius {self.radius:.4f} from the look-at point ({x:.4f}, {y:.4f}, {z:.4f}) "
               f"(re-centred there){' (world y flipped to point up)' if self.world_flipped else ''}",
               f"poses: fov {self.fov:.3f} deg = gan3d's dataset.camera.fov (full horizontal angle); "
               f"EG3D's fov_degrees for the same focal length: {self.fov_eg3d:.3f}",
               f"poses: optical axes miss the look-at point by at most {self.max_axis_error:.3f} deg"]
        out += [f"  outlier: {o}" for o in self.outliers]
        return out

    def as_dict(self) -> dict:
        return {"from": "eg3d", "radius": self.radius, "fov": self.fov, "fov_eg3d": self.fov_eg3d,
                "lookat": list(self.lookat), "max_axis_error_deg": self.max_axis_error, "outliers": self.outliers}


def check_eg3d_labels(names: list[str], labels: list, where: str) -> np.ndarray:
    """[N] raw EG3D labels -> [N, 25] float64, or DatasetError with one line per bad label naming its file:
    25 finite numbers, a rotation that is orthonormal with det +1, a positive focal length."""
    bad, rows = [], []
    for name, label in zip(names, labels):
        try:
            a = np.asarray(label, dtype=np.float64)
        except (TypeError, ValueError):
            bad.append(f"{where}: labels['{name}']: expected 25 numbers, got {str(label)[:40]}")
            continue
        if a.shape != (25,):
            bad.append(f"{where}: labels['{name}']: {a.size} numbers, expected 25 (a 4x4 cam2world, then 3x3 intrinsics)")
        elif not np.isfinite(a).all():
            bad.append(f"{where}: labels['{name}']: not all finite ({int((~np.isfinite(a)).sum())} NaN/inf)")
        else:
            R = a[:16].reshape(4, 4)[:3, :3]
            if np.abs(R.T @ R - np.eye(3)).max() > 1e-3 or abs(np.linalg.det(R) - 1) > 1e-3:
                bad.append(f"{where}: labels['{name}']: the cam2world rotation is not orthonormal with det +1 "
                           f"(det {np.linalg.det(R):.4f}): scaled, sheared or mirrored")
            elif a[16] <= 0:
                bad.append(f"{where}: labels['{name}']: focal length fx = {a[16]:g}, expected > 0")
            else:
                rows.append(a)
                continue
        rows.append(None)
    if bad:
        raise DatasetError("\n".join(bad))
    return np.stack(rows)


def eg3d_to_angles(names: list[str], labels: np.ndarray) -> tuple[np.ndarray, PoseReport]:
    """EG3D camera labels [N, 25] (flattened 4x4 OpenCV cam2world, then 3x3 normalised intrinsics)
    -> [N, 3] (yaw, pitch, roll) in gan3d's convention around the cameras' common look-at point.

    EG3D's cameras look at (0, 0, 0.2), not the origin: the look-at point is estimated (least squares over
    the optical axes), the cameras are re-centred on it, and the radius is measured from it."""
    c2w = torch.as_tensor(labels[:, :16], dtype=torch.float64).reshape(-1, 4, 4) @ _CV_TO_GL
    # EG3D's world is y-up, like gan3d's; a set whose camera up axes point to -y (a y-down world) is
    # rotated 180 degrees about x (keeps handedness) so that up is +y
    flipped = bool(c2w[:, 1, 1].mean() < 0)
    if flipped:
        c2w = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)) @ c2w
    origins, forward = c2w[:, :3, 3], -c2w[:, :3, 2]
    lookat = common_lookat(origins, forward)
    to_point = lookat - origins  # [N, 3]
    miss = torch.linalg.cross(forward, to_point, dim=-1).norm(dim=-1) / to_point.norm(dim=-1)
    axis_error = torch.rad2deg(torch.asin(miss.clamp(max=1))).numpy()
    c2w = c2w.clone()
    c2w[:, :3, 3] -= lookat
    angles, radius = angles_from_cam2world(c2w)
    fx = labels[:, 16]
    fov = np.degrees(2 * np.arctan(1 / (2 * fx)))  # fx is normalised by the image width
    fov_eg3d = np.degrees(2 * np.arctan(1 / (EG3D_FOV_FACTOR * fx)))
    r = radius.numpy()
    med_r, med_f = float(np.median(r)), float(np.median(fov))
    outliers = [f"{n}: radius {ri:.4f}, fov {fi:.3f}, axis misses the look-at point by {ei:.2f} deg"
                for n, ri, fi, ei in zip(names, r, fov, axis_error)
                if abs(ri / med_r - 1) > 0.01 or abs(fi / med_f - 1) > 0.01 or ei > AXIS_TOLERANCE_DEG]
    report = PoseReport(med_r, med_f, float(np.median(fov_eg3d)), tuple(float(v) for v in lookat),
                        float(axis_error.max()), outliers, flipped)
    return angles.float().numpy(), report


def read_eg3d_labels(archive: Archive) -> tuple[list[str], np.ndarray]:
    """The archive's images and their checked EG3D labels [N, 25] from dataset.json."""
    if not archive.has(META_FILE):
        raise DatasetError(f"{archive.path}: --poses eg3d needs a dataset.json with 'labels' of 25 numbers")
    raw = json.loads(archive.read(META_FILE))
    labels = raw.get("labels")
    if isinstance(labels, list):
        labels = {k: v for k, v in labels}
    if not isinstance(labels, dict) or not labels:
        raise DatasetError(f"{archive.describe(META_FILE)}: --poses eg3d expects 'labels' mapping files to 25 numbers")
    names = archive.image_names()
    missing = [n for n in names if n not in labels]
    if missing:
        raise DatasetError(f"{archive.describe(META_FILE)}: no EG3D camera for {len(missing)} image(s), "
                           f"e.g. '{missing[0]}'")
    return names, check_eg3d_labels(names, [labels[n] for n in names], archive.describe(META_FILE))


def looks_like_eg3d(archive: Archive) -> bool:
    """dataset.json's labels are EG3D cameras (lists of numbers) rather than class ids."""
    if not archive.has(META_FILE):
        return False
    try:
        labels = json.loads(archive.read(META_FILE)).get("labels")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return False
    first = (labels[0][1] if labels and isinstance(labels[0], list) else None) if isinstance(labels, list) else \
        next(iter(labels.values()), None) if isinstance(labels, dict) else None
    return isinstance(first, list)


def convert(src: str, dst: str, resolution: Optional[int] = None, shard_size: int = 1000, poses: str = "",
            resize_filter: str = "lanczos", allow_outliers: bool = False) -> dict:
    """Convert an archive to Parquet shards; returns the metadata written (and the pose report, if any).
    Imported cameras that disagree with the rest stop the conversion before anything is written, unless
    `allow_outliers`."""
    if resize_filter not in RESIZE_FILTERS:
        raise DatasetError(f"--resize-filter {resize_filter!r}: expected one of {', '.join(RESIZE_FILTERS)}")
    archive = Archive(src)
    names = archive.image_names()
    if not names:
        raise DatasetError(f"{archive.path}: no images found (expected PNG/JPEG/WebP files, any nesting)")
    report = None
    if poses == "eg3d":
        names, table = read_eg3d_labels(archive)
        arr, report = eg3d_to_angles(names, table)
        if report.outliers and not allow_outliers:
            raise DatasetError("\n".join(report.lines() + [
                f"{archive.describe(META_FILE)}: {len(report.outliers)} camera(s) disagree with the rest; "
                "nothing was written (pass --allow-outliers to convert anyway)"]))
        angles = {n: a.tolist() for n, a in zip(names, arr)}
        labels: dict[str, int] = {}
        extra = {}
    elif poses == "nerf":
        from gan3d.data.nerf import nerf_to_angles

        report = nerf_to_angles(archive)
        names = report.names
        angles = {n: a.tolist() for n, a in zip(names, report.angles)}
        labels, extra = {}, {}
    elif poses:
        raise DatasetError(f"--poses {poses!r}: expected 'eg3d' or 'nerf' (or nothing to use dataset.json's "
                           "camera_angles)")
    else:
        meta = parse_metadata(archive)
        check_references(archive, meta, names, need_poses=False)
        angles, labels, extra = meta.angles, meta.labels, meta.extra
    first = decode_image(archive.read(names[0]), archive.describe(names[0]))
    src_res = first.shape[1]
    res = resolution or src_res
    ang = np.array(list(angles.values()), np.float32) if angles else None
    meta_out = {
        "resolution": res, "num_images": len(names), "has_poses": bool(angles), "has_labels": bool(labels),
        "num_classes": (max(labels.values()) + 1) if labels else 0,
        "yaw_center": float(extra.get("yaw_center", yaw_center_of(ang))), "source": str(src),
        "preprocessing": {**extra.get("preprocessing", {}), "source_resolution": src_res,
                          "resize_filter": resize_filter if res != src_res else "none", "crop": "none"},
    }
    if report is not None:
        meta_out["poses"] = report.as_dict()

    def rows():
        for n in names:
            img = decode_image(archive.read(n), archive.describe(n))
            if img.shape[1] != img.shape[2]:
                raise DatasetError(f"{archive.describe(n)}: image is {img.shape[2]}x{img.shape[1]}; must be square")
            if img.shape[1] != src_res:
                raise DatasetError(f"{archive.describe(n)}: {img.shape[1]}px but {names[0]} is {src_res}px")
            if res != src_res:
                im = Image.fromarray(img.transpose(1, 2, 0)).resize((res, res), RESIZE_FILTERS[resize_filter])
                img = np.asarray(im).transpose(2, 0, 1)
            a = angles.get(n)
            yield {"image": encode_png(img), "yaw": a[0] if a else None, "pitch": a[1] if a else None,
                   "roll": a[2] if a else None, "label": labels.get(n), "path": n}

    write_shards(rows(), dst, shard_size, meta_out, total=len(names))
    if report is not None:
        meta_out["report"] = report.lines()
    return meta_out
