"""`gan3d dataset render`: Blender renders of 3D assets over Ray workers, checked against gan3d's own camera model.

Needs Blender's Python module (`pip install 'gan3d[render]'`); without it these tests skip and say so. The
assets are written by the test as OBJ text: a scene of two small emissive cubes (red, blue) at known points,
and a plain box as glTF; plus a file that is not an asset at all."""
import json
import math
import subprocess
import sys
import zipfile
from io import BytesIO

import numpy as np
import pytest
import torch
from PIL import Image

from gan3d.render.cameras import cam2world_matrix

pytest.importorskip("bpy", reason="Blender's bpy is not installed (pip install 'gan3d[render]'): render tests skipped")

RED, BLUE = (0.6, 0.2, -0.3), (-0.5, -0.4, 0.4)  # marker centres in the OBJ's own (y-up) coordinates


def _cube(center, half, first: int) -> tuple[list[str], list[str]]:
    cx, cy, cz = center
    verts = [f"v {cx + sx * half} {cy + sy * half} {cz + sz * half}" for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    return verts, [f"f {' '.join(str(first + i) for i in q)}" for q in quads]


def write_markers(path):
    mtl = path.with_suffix(".mtl")
    mtl.write_text("newmtl red\nKd 1 0 0\nKe 1 0 0\nnewmtl blue\nKd 0 0 1\nKe 0 0 1\n")
    lines = [f"mtllib {mtl.name}"]
    for i, (c, m) in enumerate(((RED, "red"), (BLUE, "blue"))):
        v, f = _cube(c, 0.06, 1 + 8 * i)
        lines += [f"o {m}", *v, f"usemtl {m}", *f]
    path.write_text("\n".join(lines) + "\n")


def write_box_gltf(path, center=(0.0, 0.1, 0.0), half=0.4):
    """A box as a self-contained glTF 2.0 file (positions and triangle indices in a base64 buffer)."""
    import base64

    pos = np.array([[center[0] + sx * half, center[1] + sy * half, center[2] + sz * half]
                    for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float32)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    idx = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))], np.uint16).ravel()
    blob = pos.tobytes() + idx.tobytes()
    gltf = {"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": "box"}],
            "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
            "buffers": [{"byteLength": len(blob),
                         "uri": "data:application/octet-stream;base64," + base64.b64encode(blob).decode()}],
            "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": pos.nbytes},
                            {"buffer": 0, "byteOffset": pos.nbytes, "byteLength": idx.nbytes}],
            "accessors": [{"bufferView": 0, "componentType": 5126, "count": 8, "type": "VEC3",
                           "min": pos.min(0).tolist(), "max": pos.max(0).tolist()},
                          {"bufferView": 1, "componentType": 5123, "count": len(idx), "type": "SCALAR"}]}
    path.write_text(json.dumps(gltf))


def project(point, angles, radius, fov, res):
    """gan3d's camera model: the pixel (col, row) whose ray (rays.ray_directions: pixel centres on [-1, 1], y up)
    passes through `point`."""
    c2w = cam2world_matrix(torch.tensor([angles], dtype=torch.float64), radius)[0].numpy()
    p = c2w[:3, :3].T @ (np.asarray(point) - c2w[:3, 3])
    t = math.tan(math.radians(fov) / 2)
    x, y = p[0] / -p[2] / t, p[1] / -p[2] / t
    return (x + 1) / 2 * (res - 1), (1 - y) / 2 * (res - 1)


@pytest.fixture(scope="module")
def rendered(one_node_ray, tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("render")
    assets = root / "assets"
    (assets / "markers").mkdir(parents=True)
    (assets / "boxes").mkdir()
    write_markers(assets / "markers" / "pair.obj")
    write_box_gltf(assets / "boxes" / "box.gltf")
    (assets / "boxes" / "broken.glb").write_bytes(b"not a glTF file")
    out = root / "set.zip"
    cmd = [sys.executable, "-m", "gan3d.cli", "dataset", "render", str(assets), str(out), "--views-per-asset", "8",
           "--resolution", "64", "--samples", "8", "--labels-from-folders", "--workers", "2",
           "--address", os.environ["GAN3D_TEST_RAY_ADDRESS"]]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return root, assets, out, cmd, first


def test_render_writes_a_dataset_and_names_the_broken_asset(rendered):
    _, _, out, _, res = rendered
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]  # one asset failed: not a clean exit
    assert "gan3d: failed after 3 attempts: boxes/broken.glb:" in res.stdout
    assert "gan3d: wrote 16 images of 2 asset(s)" in res.stdout and "(2 classes)" in res.stdout
    with zipfile.ZipFile(out) as z:
        meta = json.loads(z.read("dataset.json"))
        assert len(meta["camera_angles"]) == 16 and set(meta["labels"].values()) == {0, 1}
        assert meta["render"]["renderer"].startswith("Blender ") and meta["render"]["engine"] == "cycles"
        assert set(meta["render"]["assets"]) == {"markers/pair.obj", "boxes/box.gltf"}
        box = meta["render"]["assets"]["boxes/box.gltf"]  # the glTF's own coordinates: centre (0, 0.1, 0), side 0.8
        assert np.allclose(box["center"], [0.0, 0.1, 0.0], atol=1e-5) and np.allclose(box["bbox_size"], 0.8, atol=1e-5)


def test_cameras_put_a_known_point_on_its_rendered_marker_within_a_pixel(rendered):
    """Every view: dataset.json's angles -> gan3d's cam2world -> projection lands on the marker's pixels."""
    _, _, out, _, _ = rendered
    checked = 0
    with zipfile.ZipFile(out) as z:
        meta = json.loads(z.read("dataset.json"))
        cam, norm = meta["render"]["camera"], meta["render"]["assets"]["markers/pair.obj"]
        for name, angles in meta["camera_angles"].items():
            if not name.startswith("markers/"):
                continue
            img = np.asarray(Image.open(BytesIO(z.read(name))).convert("RGB")).astype(int)
            for center, ch in ((RED, 0), (BLUE, 2)):
                mask = (img[..., ch] > 150) & (img[..., [c for c in range(3) if c != ch]].max(-1) < 90)
                if mask.sum() < 3:  # hidden behind the other marker in this view
                    continue
                rows, cols = np.nonzero(mask)
                world = (np.asarray(center) - norm["center"]) * norm["scale"]
                u, v = project(world, angles, cam["radius"], cam["fov"], 64)
                assert abs(cols.mean() - u) < 1 and abs(rows.mean() - v) < 1, (name, ch, cols.mean(), u, rows.mean(), v)
                checked += 1
    assert checked >= 12  # of 16 marker sightings


def test_the_renders_own_transforms_json_gives_back_the_same_cameras(rendered, tmp_path):
    """--poses nerf on the render's transforms.json (Blender's z-up world) recovers dataset.json's angles."""
    import pyarrow.parquet as pq

    from gan3d.data.convert import convert

    _, _, out, _, _ = rendered
    meta = convert(str(out), str(tmp_path / "nerf"), poses="nerf")
    assert meta["poses"]["up_axis"] == "+z" and abs(meta["poses"]["radius_std"]) < 1e-4
    with zipfile.ZipFile(out) as z:
        want = json.loads(z.read("dataset.json"))["camera_angles"]
    rows = [r for f in sorted((tmp_path / "nerf").rglob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert len(rows) == len(want)
    for r in rows:
        d = np.subtract([r["yaw"], r["pitch"], r["roll"]], want[r["path"]])
        d[0] = (d[0] + math.pi) % (2 * math.pi) - math.pi  # yaw -pi and pi are one camera
        assert np.abs(d).max() < 1e-4, (r["path"], d)


def test_a_rerun_renders_only_what_is_missing_and_the_set_trains(rendered, tmp_path):
    root, _, out, cmd, _ = rendered
    parts = root / ".set.zip.parts"
    kept = (parts / "markers" / "pair" / "0000.png").stat().st_mtime_ns
    (parts / "boxes" / "box" / "done.json").unlink()  # as if killed before that asset finished
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert "3 asset(s) under" in res.stdout and "1 already rendered, 2 to render" in res.stdout, res.stdout
    assert (parts / "markers" / "pair" / "0000.png").stat().st_mtime_ns == kept
    from gan3d.config import load_config
    from gan3d.training.loop import training_loop
    from gan3d.training.session import LocalSession
    from conftest import SMOKE

    cfg = load_config(SMOKE, [f"dataset.path={out}", "dataset.resolution=64", "dataset.use_labels=true",
                              "dataset.c_dim=2", "dataset.camera.dist=dataset", "dataset.camera.fov=30",
                              "training.kimg=0.016", "training.tick_kimg=0.016", "logging.wandb=false",
                              "metrics.metrics=[]", "training.image_kimg=10"])
    row = training_loop(cfg, tmp_path, LocalSession(tmp_path), str(out), "rendered")
    assert row["kimg"] >= 0.016 and math.isfinite(row["loss_G"])
