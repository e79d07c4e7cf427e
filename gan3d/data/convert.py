"""`gan3d dataset convert`: zip / folder -> Parquet shards, with resizing and pose import (EG3D labels)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from PIL import Image

from gan3d.data.archive import META_FILE, Archive, check_references, decode_image, parse_metadata
from gan3d.data.dataset import yaw_center_of
from gan3d.data.parquet import RESIZE_FILTERS, encode_png, write_shards
from gan3d.errors import DatasetError
from gan3d.render.cameras import angles_from_cam2world

# OpenCV camera axes (x right, y down, z forward) -> ours (x right, y up, z backward)
_CV_TO_GL = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


@dataclass
class PoseReport:
    """What a set of imported cameras implies, and which cameras disagree with the rest by > 1%."""
    radius: float
    fov: float
    outliers: list[str] = field(default_factory=list)
    world_flipped: bool = False

    def lines(self) -> list[str]:
        out = [f"poses: camera radius {self.radius:.4f}, fov {self.fov:.3f} deg"
               + (" (world y axis flipped to point up)" if self.world_flipped else "")]
        out += [f"  outlier: {o}" for o in self.outliers]
        return out


def eg3d_to_angles(names: list[str], labels: np.ndarray) -> tuple[np.ndarray, PoseReport]:
    """EG3D camera labels [N, 25] (flattened 4x4 OpenCV cam2world, then 3x3 normalised intrinsics)
    -> [N, 3] (yaw, pitch, roll) in gan3d's convention, with the radius and fov they imply."""
    if labels.ndim != 2 or labels.shape[1] != 25:
        raise DatasetError(f"EG3D poses: expected 25 numbers per image, got shape {labels.shape}")
    c2w = torch.as_tensor(labels[:, :16], dtype=torch.float64).reshape(-1, 4, 4) @ _CV_TO_GL.double()
    # EG3D's world has y pointing down for FFHQ; if the cameras' up axes point to -y, rotate the world
    # by 180 degrees about x (keeps handedness) so that up is +y as in our convention.
    flipped = bool(c2w[:, 1, 1].mean() < 0)
    if flipped:
        c2w = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)) @ c2w
    angles, radius = angles_from_cam2world(c2w)
    fx = labels[:, 16]
    fov = np.degrees(2 * np.arctan(1 / (2 * fx)))  # fx is normalised by the image width
    r = radius.numpy()
    med_r, med_f = float(np.median(r)), float(np.median(fov))
    outliers = [f"{n}: radius {ri:.4f}, fov {fi:.3f}" for n, ri, fi in zip(names, r, fov)
                if abs(ri / med_r - 1) > 0.01 or abs(fi / med_f - 1) > 0.01]
    return angles.float().numpy(), PoseReport(med_r, med_f, outliers, flipped)


def _eg3d_labels(archive: Archive) -> dict[str, list[float]]:
    if not archive.has(META_FILE):
        raise DatasetError(f"{archive.path}: --poses eg3d needs a dataset.json with 'labels' of 25 numbers")
    raw = json.loads(archive.read(META_FILE))
    labels = raw.get("labels")
    if isinstance(labels, list):
        labels = {k: v for k, v in labels}
    if not isinstance(labels, dict) or not labels:
        raise DatasetError(f"{archive.describe(META_FILE)}: --poses eg3d expects 'labels' mapping files to 25 numbers")
    return labels


def convert(src: str, dst: str, resolution: Optional[int] = None, shard_size: int = 1000, poses: str = "",
            resize_filter: str = "lanczos") -> dict:
    """Convert an archive to Parquet shards; returns the metadata written (and the pose report, if any)."""
    if resize_filter not in RESIZE_FILTERS:
        raise DatasetError(f"--resize-filter {resize_filter!r}: expected one of {', '.join(RESIZE_FILTERS)}")
    archive = Archive(src)
    names = archive.image_names()
    if not names:
        raise DatasetError(f"{archive.path}: no images found (expected PNG/JPEG/WebP files, any nesting)")
    report = None
    if poses == "eg3d":
        table = _eg3d_labels(archive)
        missing = [n for n in names if n not in table]
        if missing:
            raise DatasetError(f"{archive.describe(META_FILE)}: no EG3D camera for {len(missing)} image(s), "
                               f"e.g. '{missing[0]}'")
        arr, report = eg3d_to_angles(names, np.asarray([table[n] for n in names], dtype=np.float64))
        angles = {n: a.tolist() for n, a in zip(names, arr)}
        labels: dict[str, int] = {}
        extra = {}
    elif poses:
        raise DatasetError(f"--poses {poses!r}: expected 'eg3d' (or nothing to use dataset.json's camera_angles)")
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
        meta_out["poses"] = {"from": "eg3d", "radius": report.radius, "fov": report.fov,
                             "outliers": len(report.outliers)}

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
