"""Image archives in the seed's format: a zip or folder of images (any nesting) with an optional
`dataset.json` holding "camera_angles" {path: [yaw, pitch, roll]} and "labels" {path: int}.

Everything here raises DatasetError with one line naming the file (and entry) and what was expected.
"""
from __future__ import annotations

import io
import json
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from gan3d.errors import DatasetError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")
META_FILE = "dataset.json"


class Archive:
    """Read-only view of a zip file or a folder: relative POSIX names -> bytes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise DatasetError(f"{self.path}: dataset not found (expected a .zip, a folder of images or a Parquet dir)")
        self._zip: Optional[zipfile.ZipFile] = None
        self._pid = os.getpid()
        if self.path.is_file():
            try:
                self._zip = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile:
                raise DatasetError(f"{self.path}: not a zip archive (expected a .zip or a folder of images)") from None
            self._names = sorted(n for n in self._zip.namelist() if not n.endswith("/"))
        else:
            root = self.path
            self._names = sorted(str(p.relative_to(root).as_posix()) for p in root.rglob("*") if p.is_file())

    def __getstate__(self):  # zip handles do not pickle (DataLoader workers): reopen lazily
        return {"path": self.path, "_names": self._names, "_zip": None, "_is_zip": self._zip is not None}

    def __setstate__(self, state):
        self.path, self._names = state["path"], state["_names"]
        self._zip = zipfile.ZipFile(self.path) if state["_is_zip"] else None
        self._pid = os.getpid()

    @property
    def names(self) -> list[str]:
        return self._names

    def image_names(self) -> list[str]:
        return [n for n in self._names if n.lower().endswith(IMAGE_EXTS)]

    def other_names(self) -> list[str]:
        return [n for n in self._names if not n.lower().endswith(IMAGE_EXTS) and n != META_FILE
                and not n.startswith("__MACOSX") and not n.endswith((".npy", ".npz", ".md", ".txt"))
                and not (n.startswith("transforms") and n.endswith(".json"))]  # NeRF camera files beside the images

    def read(self, name: str) -> bytes:
        try:
            with self.open(name) as f:
                return f.read()
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:  # a damaged entry: not transient
            raise DatasetError(f"{self.describe(name)}: unreadable ({type(e).__name__}: {e})") from None

    def open(self, name: str):
        """A binary stream of one entry: reading a header does not read the whole file."""
        if self._zip is not None:
            if self._pid != os.getpid():  # a forked DataLoader worker must not share the parent's file offset
                self._zip, self._pid = zipfile.ZipFile(self.path), os.getpid()
            return self._zip.open(name)
        return open(self.path / name, "rb")

    def has(self, name: str) -> bool:
        return name in set(self._names)

    def describe(self, name: str) -> str:
        return f"{self.path}:{name}" if self._zip is not None else str(self.path / name)


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Encoded bytes -> uint8 [3, H, W]; grayscale becomes RGB, and transparency is composited over white (how
    object datasets rendered on a transparent background, e.g. NeRF-synthetic, are meant to be seen)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if "A" in im.getbands() or "transparency" in im.info:
                rgba = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            arr = np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises several types for bad data
        raise DatasetError(f"{where}: corrupt, truncated or not an image ({type(e).__name__}: {e})") from None
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def image_header(data, where: str) -> tuple[int, int, str]:
    """(width, height, mode) from the header only; `data` is bytes or a binary file object."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            return im.width, im.height, im.mode
    except Exception as e:
        raise DatasetError(f"{where}: not a readable image ({type(e).__name__}: {e})") from None


@dataclass
class Metadata:
    """The parsed dataset.json: poses and labels keyed by image name, plus preprocessing notes."""
    angles: dict[str, list[float]] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # e.g. preprocessing, synthetic scene notes


def angle_problems(name: str, a) -> Optional[str]:
    """A camera is [yaw, pitch, roll] (at dataset.camera.radius) or [yaw, pitch, roll, radius] (its own distance
    from the point it looks at, as EG3D's cameras have: `gan3d dataset convert --poses eg3d`)."""
    if (not isinstance(a, (list, tuple)) or len(a) not in (3, 4)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in a)):
        return f"camera_angles['{name}'] = {str(a)[:60]}: expected [yaw, pitch, roll] or [yaw, pitch, roll, radius] numbers"
    yaw, pitch = a[0], a[1]
    if not all(math.isfinite(v) for v in a):
        return f"camera_angles['{name}'] = {a!r}: angles must be finite"
    if len(a) == 4 and a[3] <= 0:
        return f"camera_angles['{name}']: radius {a[3]} must be > 0"
    if not -math.pi - 1e-6 <= yaw <= math.pi + 1e-6:
        return f"camera_angles['{name}']: yaw {yaw} is outside [-pi, pi]"
    if not -1e-6 <= pitch <= math.pi + 1e-6:
        return f"camera_angles['{name}']: pitch {pitch} is outside [0, pi]"
    return None


def parse_metadata(archive: Archive, collect: Optional[list[str]] = None) -> Metadata:
    """Read dataset.json. With `collect`, problems are appended there; otherwise the first one raises."""
    def problem(msg: str):
        if collect is None:
            raise DatasetError(msg)
        collect.append(msg)

    meta = Metadata()
    if not archive.has(META_FILE):
        return meta
    where = archive.describe(META_FILE)
    try:
        raw = json.loads(archive.read(META_FILE))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problem(f"{where}: not valid JSON ({e})")
        return meta
    if not isinstance(raw, dict):
        problem(f"{where}: expected a JSON object with 'camera_angles' and/or 'labels'")
        return meta
    angles = raw.get("camera_angles") or {}
    labels = raw.get("labels") or {}
    if isinstance(labels, list):  # StyleGAN2-ADA writes [[name, label], ...]
        labels = {k: v for k, v in labels if k is not None}
    if not isinstance(angles, dict):
        problem(f"{where}: 'camera_angles' must map image paths to [yaw, pitch, roll]")
        angles = {}
    for name, a in angles.items():
        if (msg := angle_problems(name, a)) is not None:
            problem(f"{where}: {msg}")
        else:
            meta.angles[name] = [float(v) for v in a]
    widths = {len(a) for a in meta.angles.values()}
    if len(widths) > 1:
        odd = next(n for n, a in meta.angles.items() if len(a) != len(next(iter(meta.angles.values()))))
        problem(f"{where}: camera_angles mixes 3 and 4 numbers per camera (e.g. '{odd}'); give every camera a "
                f"radius or none")
    for name, lab in labels.items():
        if isinstance(lab, bool) or not isinstance(lab, int) or lab < 0:
            problem(f"{where}: labels['{name}'] = {lab!r}: expected a non-negative integer class")
        else:
            meta.labels[name] = lab
    meta.extra = {k: v for k, v in raw.items() if k not in ("camera_angles", "labels")}
    return meta


def check_references(archive: Archive, meta: Metadata, images: list[str], need_poses: bool,
                     collect: Optional[list[str]] = None) -> None:
    """Poses/labels must refer to images that exist; with need_poses every image must have one; not all zero."""
    def problem(msg: str):
        if collect is None:
            raise DatasetError(msg)
        collect.append(msg)

    where = archive.describe(META_FILE)
    present = set(images)
    for kind, table in (("camera_angles", meta.angles), ("labels", meta.labels)):
        missing = [n for n in table if n not in present]
        if missing:
            problem(f"{where}: {kind} for {len(missing)} file(s) not in the dataset, e.g. '{missing[0]}'")
    if need_poses:
        without = [n for n in images if n not in meta.angles]
        if without:
            problem(f"{where if archive.has(META_FILE) else archive.path}: camera poses are required but "
                    f"{len(without)} image(s) have none, e.g. '{without[0]}'")
    if meta.angles and all(all(v == 0 for v in a) for a in meta.angles.values()):
        problem(f"{where}: every camera angle is zero; the poses are missing or were never filled in")
