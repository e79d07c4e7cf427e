"""`gan3d dataset validate`: one full pass over a dataset that reports every problem it finds, the
statistics a user checks before training (counts, resolution, channels, classes, pose ranges, mean
pose), and a PNG of the camera distribution."""
from __future__ import annotations

import io
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageDraw

from gan3d.data.archive import Archive, check_references, decode_image, image_header, parse_metadata
from gan3d.data.convert import eg3d_to_angles, looks_like_eg3d, read_eg3d_labels
from gan3d.data.parquet import COLUMNS, is_parquet, list_shards, read_metadata
from gan3d.config import CameraConfig
from gan3d.errors import DatasetError
from gan3d.render.views import TrainedViews, subsample


@dataclass
class ValidationReport:
    path: str
    num_images: int = 0
    resolution: Optional[int] = None
    modes: Counter = field(default_factory=Counter)
    classes: Counter = field(default_factory=Counter)
    angles: Optional[np.ndarray] = None
    problems: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    camera_lines: list[str] = field(default_factory=list)  # imported cameras: radius, fov, look-at, outliers

    @property
    def ok(self) -> bool:
        return not self.problems and self.num_images > 0

    def lines(self) -> list[str]:
        out = [f"dataset: {self.path}", f"images: {self.num_images}",
               f"resolution: {self.resolution}x{self.resolution}" if self.resolution else "resolution: ?",
               "channels: " + (", ".join(f"{m} x{c}" for m, c in self.modes.most_common()) or "?")]
        out.append(f"label classes: {len(self.classes)}" + (f" (ids {min(self.classes)}..{max(self.classes)})"
                                                            if self.classes else ""))
        if self.angles is not None and len(self.angles):
            a = self.angles
            out.append(f"poses: {len(a)}; yaw [{a[:, 0].min():.3f}, {a[:, 0].max():.3f}], pitch "
                       f"[{a[:, 1].min():.3f}, {a[:, 1].max():.3f}], roll [{a[:, 2].min():.3f}, {a[:, 2].max():.3f}]")
            views = TrainedViews(subsample(torch.as_tensor(a)), "dataset", CameraConfig())
            if views.all_around:  # a mean of views all around the object describes none of them
                out.append(f"views: {views.summary()}")
            else:
                mean_yaw = math.atan2(np.sin(a[:, 0]).mean(), np.cos(a[:, 0]).mean())
                out.append(f"mean pose: yaw {mean_yaw:.3f}, pitch {a[:, 1].mean():.3f}, roll {a[:, 2].mean():.3f}"
                           f"; views {views.summary()}")
        else:
            out.append("poses: none")
        out += self.camera_lines
        pre = self.meta.get("preprocessing")
        if pre:
            out.append("preprocessing: " + ", ".join(f"{k}={v}" for k, v in pre.items()))
        out += [f"PROBLEM: {p}" for p in self.problems]
        out.append("usable: yes" if self.ok else f"usable: NO ({len(self.problems)} problem(s))")
        return out


def _check_image(data: bytes, where: str, rep: ValidationReport, sizes: Counter) -> None:
    try:
        w, h, mode = image_header(data, where)
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # full decode: catches truncation the header does not show
    except DatasetError as e:
        rep.problems.append(str(e))
        return
    except Exception as e:
        rep.problems.append(f"{where}: corrupt or truncated image ({type(e).__name__}: {e})")
        return
    rep.modes[mode] += 1
    if w != h:
        rep.problems.append(f"{where}: image is {w}x{h}; images must be square")
    sizes[(w, h)] += 1


def _validate_archive(path: str, rep: ValidationReport, need_poses: bool) -> None:
    archive = Archive(path)
    names = archive.image_names()
    for other in archive.other_names():
        rep.problems.append(f"{archive.describe(other)}: not an image (expected PNG/JPEG/WebP or dataset.json)")
    if not names:
        rep.problems.append(f"{archive.path}: no images found (expected PNG/JPEG/WebP files, any nesting)")
        return
    sizes: Counter = Counter()
    for n in names:
        _check_image(archive.read(n), archive.describe(n), rep, sizes)
    _sizes_problem(sizes, rep)
    rep.num_images = len(names)
    if looks_like_eg3d(archive):  # EG3D cameras: the camera report instead of class labels
        try:
            eg_names, labels = read_eg3d_labels(archive)
            res = decode_image(archive.read(eg_names[0]), archive.describe(eg_names[0])).shape[1]
            angles, report = eg3d_to_angles(eg_names, labels, res)
        except DatasetError as e:
            rep.problems += str(e).splitlines()
            return
        rep.camera_lines = report.lines()
        rep.problems += [f"camera outlier {o}" for o in report.outliers]
        rep.angles = angles
        return
    meta = parse_metadata(archive, collect=rep.problems)
    check_references(archive, meta, names, need_poses, collect=rep.problems)
    rep.meta = meta.extra
    rep.classes = Counter(meta.labels.values())
    if meta.angles:
        rep.angles = np.array(list(meta.angles.values()), np.float32)


def _validate_parquet(path: str, rep: ValidationReport, need_poses: bool) -> None:
    import pyarrow.parquet as pq

    fs, files = list_shards(path)
    sizes: Counter = Counter()
    angles = []
    for f in files:
        try:
            rep.meta = read_metadata(fs, f) or rep.meta
        except DatasetError as e:
            rep.problems.append(str(e))
            continue
        table = pq.read_table(fs.open_input_file(f), columns=list(COLUMNS))
        cols = {c: table.column(c).to_pylist() for c in COLUMNS}
        for i in range(table.num_rows):
            where = f"{f}:{cols['path'][i]}"
            _check_image(cols["image"][i], where, rep, sizes)
            yp = [cols[k][i] for k in ("yaw", "pitch", "roll")]
            if all(v is not None for v in yp):
                angles.append(yp)
                if not -math.pi - 1e-6 <= yp[0] <= math.pi + 1e-6 or not -1e-6 <= yp[1] <= math.pi + 1e-6:
                    rep.problems.append(f"{where}: pose {yp} out of range (yaw in [-pi, pi], pitch in [0, pi])")
            elif need_poses:
                rep.problems.append(f"{where}: camera pose required but missing")
            if cols["label"][i] is not None:
                rep.classes[cols["label"][i]] += 1
        rep.num_images += table.num_rows
    _sizes_problem(sizes, rep)
    if angles:
        rep.angles = np.array(angles, np.float32)
        if np.all(rep.angles == 0):
            rep.problems.append(f"{path}: every camera angle is zero; the poses are missing or were never filled in")


def _sizes_problem(sizes: Counter, rep: ValidationReport) -> None:
    if not sizes:
        return
    (w, h), _ = sizes.most_common(1)[0]
    rep.resolution = w
    if len(sizes) > 1:
        rep.problems.append("mixed image sizes: " + ", ".join(f"{a}x{b} x{c}" for (a, b), c in sizes.most_common())
                            + "; all images must have one size")


def validate(path: str, need_poses: bool = False, png: Optional[str] = None) -> ValidationReport:
    """Check everything; never raises for data problems (they are collected), only for a missing path."""
    rep = ValidationReport(str(path))
    if is_parquet(path):
        try:
            _validate_parquet(path, rep, need_poses)
        except DatasetError as e:
            rep.problems.append(str(e))
    else:
        _validate_archive(path, rep, need_poses)
    if png:
        camera_plot(rep.angles, png)
    return rep


def camera_plot(angles: Optional[np.ndarray], out: str, size: int = 360) -> str:
    """Yaw/pitch density map (yaw -pi..pi across, pitch 0..pi down) with axes, as a PNG."""
    pad = 40
    im = Image.new("RGB", (size + 2 * pad, size // 2 + 2 * pad), "white")
    draw = ImageDraw.Draw(im)
    W, H = size, size // 2
    if angles is not None and len(angles):
        hist, _, _ = np.histogram2d(angles[:, 1], angles[:, 0], bins=[H // 4, W // 4], range=[[0, math.pi], [-math.pi, math.pi]])
        hist = np.log1p(hist) / max(np.log1p(hist).max(), 1e-9)
        heat = (255 * (1 - hist)).astype(np.uint8)
        rgb = np.stack([heat, heat, np.full_like(heat, 255)], -1)
        im.paste(Image.fromarray(rgb).resize((W, H), Image.NEAREST), (pad, pad))
        mean_yaw = math.atan2(np.sin(angles[:, 0]).mean(), np.cos(angles[:, 0]).mean())
        cx = pad + (mean_yaw + math.pi) / (2 * math.pi) * W
        cy = pad + angles[:, 1].mean() / math.pi * H
        draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], outline="red", width=2)
    else:
        draw.text((pad + 10, pad + H // 2), "no camera poses", fill="black")
    draw.rectangle([pad, pad, pad + W, pad + H], outline="black")
    for frac, label in ((0, "-pi"), (0.25, "-pi/2"), (0.5, "0"), (0.75, "pi/2"), (1, "pi")):
        x = pad + frac * W
        draw.line([x, pad + H, x, pad + H + 4], fill="black")
        draw.text((x - 10, pad + H + 6), label, fill="black")
    for frac, label in ((0, "0"), (0.5, "pi/2"), (1, "pi")):
        y = pad + frac * H
        draw.text((4, y - 5), label, fill="black")
    draw.text((pad + W // 2 - 60, 8), "camera yaw (x) / pitch (y)", fill="black")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    im.save(out)
    return out
