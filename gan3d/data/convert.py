"""`gan3d dataset convert`: zip / folder -> Parquet shards (or a zip, when the destination ends in .zip), with
resizing and pose import (EG3D labels; NeRF transforms.json in gan3d.data.nerf)."""
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
EG3D_FOV_FACTOR = 1.414  # EG3D's FOV_to_intrinsics: fx = 1 / (tan(fov_degrees / 2) * 1.414)
# What cannot be a camera of one set (refused unless --allow-outliers): an optical axis this far from the common
# look-at point, a distance or focal length this far from the set's median, an off-centre principal point or
# non-square pixels (gan3d's cameras have neither).
AXIS_LIMIT_DEG = 10.0
RADIUS_LIMIT = (0.5, 2.0)
FOV_LIMIT = (0.8, 1.25)
INTRINSICS_TOLERANCE = 0.01
SPREAD_Z = 8.0  # reported (not refused) beyond this many robust standard deviations of the set


@dataclass
class PoseReport:
    """What a set of imported cameras implies, and which cameras stand out."""
    radius: float  # median distance from the common look-at point (each camera keeps its own)
    fov: float  # gan3d's dataset.camera.fov at the written resolution (full horizontal angle between the outer
    #             pixel centres, degrees)
    fov_eg3d: float  # the `fov_degrees` EG3D's own config would give for the same focal length
    lookat: tuple[float, float, float]  # least-squares point closest to every optical axis (EG3D world)
    max_axis_error: float  # degrees by which the worst optical axis misses the look-at point
    radius_spread: tuple[float, float] = (0.0, 0.0)  # min, max distance
    outliers: list[str] = field(default_factory=list)  # cannot be a camera of this set
    unusual: list[str] = field(default_factory=list)  # beyond the set's natural spread: reported only
    world_flipped: bool = False

    def lines(self) -> list[str]:
        x, y, z = self.lookat
        lo, hi = self.radius_spread
        out = [f"poses: cameras {lo:.4f}-{hi:.4f} (median {self.radius:.4f}) from the look-at point "
               f"({x:.4f}, {y:.4f}, {z:.4f}); each keeps its own distance (re-centred there)"
               f"{' (world y flipped to point up)' if self.world_flipped else ''}",
               f"poses: fov {self.fov:.4f} deg = gan3d's dataset.camera.fov at this resolution (full angle between "
               f"the outer pixel centres); EG3D's fov_degrees for the same focal length: {self.fov_eg3d:.3f}",
               f"poses: optical axes miss the look-at point by at most {self.max_axis_error:.3f} deg"]
        out += [f"  unusual (kept): {o}" for o in self.unusual[:20]]
        if len(self.unusual) > 20:
            out.append(f"  ... and {len(self.unusual) - 20} more unusual camera(s)")
        out += [f"  outlier: {o}" for o in self.outliers]
        return out

    def as_dict(self) -> dict:
        return {"from": "eg3d", "radius": self.radius, "radius_range": list(self.radius_spread), "fov": self.fov,
                "fov_eg3d": self.fov_eg3d, "lookat": list(self.lookat), "max_axis_error_deg": self.max_axis_error,
                "outliers": self.outliers, "unusual": self.unusual}


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


def _robust_z(x: np.ndarray) -> np.ndarray:
    """|x - median| in robust standard deviations (1.4826 MAD; a floor keeps an exact set from dividing by 0)."""
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    return np.abs(x - med) / max(mad, 1e-6 * max(abs(med), 1e-6))


def eg3d_to_angles(names: list[str], labels: np.ndarray, resolution: int) -> tuple[np.ndarray, PoseReport]:
    """EG3D camera labels [N, 25] (flattened 4x4 OpenCV cam2world, then 3x3 intrinsics normalised by the image
    size) -> [N, 4] (yaw, pitch, roll, radius) in gan3d's convention around the cameras' common look-at point.

    EG3D's cameras sit on a sphere around the origin and look at (0, 0, 0.2), so their distances from the point they
    look at differ (by ~1% over its yaw / pitch ranges): the look-at point is estimated (least squares over the
    optical axes), the cameras are re-centred on it, and each keeps its own distance (the pose's 4th value), so every
    camera's rays are EG3D's own. EG3D samples pixel centres at (i + 0.5) / W, gan3d's grid puts the outer pixel
    centres on the field of view's edges: fov = 2 atan((W - 1) / (2 W fx)) at the written resolution W makes the
    two grids coincide."""
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
    fx, cx, fy, cy = labels[:, 16], labels[:, 18], labels[:, 20], labels[:, 21]
    fov = np.degrees(2 * np.arctan((resolution - 1) / (2 * resolution * fx)))
    fov_eg3d = np.degrees(2 * np.arctan(1 / (EG3D_FOV_FACTOR * fx)))
    r = radius.numpy()
    med_r, med_f = float(np.median(r)), float(np.median(fov))
    outliers, unusual = [], []
    z_r, z_f, z_e = _robust_z(r), _robust_z(fov), _robust_z(axis_error)
    for i, n in enumerate(names):
        what = f"{n}: radius {r[i]:.4f}, fov {fov[i]:.3f}, axis misses the look-at point by {axis_error[i]:.2f} deg"
        if (axis_error[i] > AXIS_LIMIT_DEG or not RADIUS_LIMIT[0] <= r[i] / med_r <= RADIUS_LIMIT[1]
                or not FOV_LIMIT[0] <= fov[i] / med_f <= FOV_LIMIT[1]):
            outliers.append(what)
        elif abs(cx[i] - 0.5) > INTRINSICS_TOLERANCE or abs(cy[i] - 0.5) > INTRINSICS_TOLERANCE:
            outliers.append(f"{n}: principal point ({cx[i]:.3f}, {cy[i]:.3f}), gan3d's cameras have it at the centre")
        elif abs(fy[i] / fx[i] - 1) > INTRINSICS_TOLERANCE:
            outliers.append(f"{n}: fy / fx = {fy[i] / fx[i]:.3f}, gan3d's pixels are square")
        elif max(z_r[i], z_f[i], z_e[i]) > SPREAD_Z:
            unusual.append(what)
    report = PoseReport(med_r, med_f, float(np.median(fov_eg3d)), tuple(float(v) for v in lookat),
                        float(axis_error.max()), (float(r.min()), float(r.max())), outliers, unusual, flipped)
    return np.concatenate([angles.float().numpy(), r[:, None].astype(np.float32)], 1), report


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


def write_zip(rows, dst: str, meta: dict, total: Optional[int] = None) -> int:
    """Converted rows as a gan3d zip: PNGs under their dataset names and a dataset.json (camera_angles, labels and
    the conversion's metadata), written beside `dst` and renamed into place (a failure leaves nothing)."""
    import os
    import zipfile
    from pathlib import Path, PurePosixPath

    from tqdm import tqdm

    from gan3d.storage import is_uri

    if is_uri(dst):
        raise DatasetError(f"{dst}: a zip is written to a local path; for an object store give a Parquet destination "
                           "(a name without .zip)")
    out = Path(dst)
    if out.is_dir():
        raise DatasetError(f"{dst}: a directory is there; expected a new .zip file")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    angles: dict[str, list] = {}
    labels: dict[str, int] = {}
    try:
        with zipfile.ZipFile(tmp, "w") as z:
            for row in tqdm(rows, total=total, desc=f"writing {dst}", unit="img", disable=None):
                name = str(PurePosixPath(row["path"]).with_suffix(".png"))  # re-encoded as PNG
                if name in angles or name in labels:
                    raise DatasetError(f"{row['path']}: another image also becomes {name} in {dst}")
                z.writestr(name, row["image"])
                pose = [row[k] for k in ("yaw", "pitch", "roll", "radius") if row[k] is not None]
                if pose:
                    angles[name] = pose
                if row["label"] is not None:
                    labels[name] = row["label"]
            z.writestr(META_FILE, json.dumps({"camera_angles": angles, "labels": labels, **meta}))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return len(angles) or total or 0


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
        src_res = decode_image(archive.read(names[0]), archive.describe(names[0])).shape[1]
        arr, report = eg3d_to_angles(names, table, resolution or src_res)
        if report.outliers and not allow_outliers:
            raise DatasetError("\n".join(report.lines() + [
                f"{archive.describe(META_FILE)}: {len(report.outliers)} camera(s) cannot be cameras of this set; "
                "nothing was written (pass --allow-outliers to convert anyway)"]))
        angles = {n: a.tolist() for n, a in zip(names, arr)}
        labels: dict[str, int] = {}
        extra = {}
    elif poses == "nerf":
        from gan3d.data.nerf import nerf_to_angles

        report = nerf_to_angles(archive, resolution, allow_outliers)
        names = report.names
        spread = report.radius.std() > 1e-3 * report.radius.mean()  # each camera keeps its own distance
        angles = {n: a.tolist() + ([float(r)] if spread else []) for n, a, r in zip(names, report.angles, report.radius)}
        meta = parse_metadata(archive)  # a gan3d render's dataset.json also names the classes
        labels, extra = {n: meta.labels[n] for n in names if n in meta.labels}, {}
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
        "resolution": res, "num_images": len(names), "has_poses": bool(angles),
        "has_radius": bool(angles) and len(next(iter(angles.values()))) > 3, "has_labels": bool(labels),
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
                   "roll": a[2] if a else None, "radius": a[3] if a and len(a) > 3 else None,
                   "label": labels.get(n), "path": n}

    if dst.lower().endswith(".zip"):
        meta_out["format"] = "zip"
        write_zip(rows(), dst, meta_out, total=len(names))
    else:
        meta_out["format"] = "parquet"
        write_shards(rows(), dst, shard_size, meta_out, total=len(names))
    if report is not None:
        meta_out["report"] = report.lines()
    return meta_out
