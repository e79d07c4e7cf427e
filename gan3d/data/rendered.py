"""Rendered assets -> one gan3d dataset: which assets `gan3d dataset render` has finished (their `done.json`), and
their views assembled as a zip (dataset.json with cameras, class labels and the render's metadata, plus a
NeRF-style transforms.json) or Parquet shards. Needs no Blender: the parts are plain PNGs and JSON."""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import torch

from gan3d.data.blender import DONE, LIGHTS, RenderSettings, asset_id, camera_matrix_blender
from gan3d.errors import ConfigError


def finished(parts: str | Path, rel: str) -> bool:
    return (Path(parts) / asset_id(rel) / DONE).is_file()


def assemble(parts: str | Path, records: list[dict], dst: str | Path, s: RenderSettings, labels_from_folders: bool,
             fmt: str = "zip") -> dict:
    """The finished assets' views as one gan3d dataset at `dst`: a zip with dataset.json (camera_angles, labels
    from the first folder level, the render's metadata) and a NeRF-style transforms.json of the same cameras, or
    Parquet shards (`fmt` 'parquet', local or a URI)."""
    import tempfile
    import zipfile

    classes = sorted({r["asset"].split("/")[0] for r in records}) if labels_from_folders else []
    if labels_from_folders and any("/" not in r["asset"] for r in records):
        bad = next(r["asset"] for r in records if "/" not in r["asset"])
        raise ConfigError(f"--labels-from-folders: {bad} is not inside a class folder")
    angles, labels = {}, {}
    for r in records:
        for v in r["views"]:
            name = f"{asset_id(r['asset'])}/{v['file']}"
            angles[name] = v["angles"]
            if classes:
                labels[name] = classes.index(r["asset"].split("/")[0])
    meta = {"camera_angles": angles, **({"labels": labels} if labels else {}),
            "render": {"renderer": records[0]["renderer"] if records else None, "engine": s.engine,
                       "samples": s.samples, "resolution": s.resolution, "views_per_asset": s.views,
                       "background": s.background, "camera": asdict(s.camera),
                       "blender_fov_deg": math.degrees(s.blender_fov), "fill": s.fill, "seed": s.seed,
                       "classes": classes,
                       "light": {"name": s.light, "sky": LIGHTS[s.light][0],
                                 "suns": [dict(zip(("strength", "tilt_deg", "azimuth_deg"), sun))
                                          for sun in LIGHTS[s.light][1]]},
                       "assets": {r["asset"]: {**r["normalisation"], "seed": r["seed"]} for r in records}}}
    if fmt not in ("zip", "parquet"):
        raise ConfigError(f"--format {fmt!r}: expected zip or parquet")
    zip_path = Path(dst) if fmt == "zip" else Path(tempfile.mkdtemp()) / "render.zip"
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_name(f".{zip_path.name}.tmp")
    with zipfile.ZipFile(tmp, "w") as z:
        for name in angles:
            z.write(Path(parts) / name, name)
        z.writestr("dataset.json", json.dumps(meta))
        # the same cameras as NeRF-synthetic writes them (Blender's world and field of view), for NeRF tools
        frames = [{"file_path": name, "transform_matrix": camera_matrix_blender(torch.tensor(a), s.camera.radius).tolist()}
                  for name, a in angles.items()]
        z.writestr("transforms.json", json.dumps({"camera_angle_x": s.blender_fov, "frames": frames}))
    os.replace(tmp, zip_path)
    if fmt == "parquet":
        from gan3d.data.convert import convert

        convert(str(zip_path), str(dst))
    return meta
