"""Datasets: formats, round trips, sharding, mirroring, synthetic scenes, pose import, validation, bad input."""
import io
import json
import math
import subprocess
import sys
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from gan3d.data import ImageDataset, mirror_angles, open_dataset
from gan3d.data.convert import convert, eg3d_to_angles
from gan3d.data.order import epoch_order
from gan3d.data.parquet import ParquetDataset
from gan3d.data.validate import validate
from gan3d.errors import DatasetError
from gan3d.render.cameras import cam2world_matrix


def png(w=8, h=8, seed=0, fmt="PNG"):
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def make_zip(path, files: dict, meta=None):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        if meta is not None:
            z.writestr("dataset.json", meta if isinstance(meta, (str, bytes)) else json.dumps(meta))
    return path


def posed_zip(tmp_path, n=12, labels=True):
    files = {f"a/{i:03d}.png" if i % 2 else f"b/c/{i:03d}.jpg": png(seed=i, fmt="PNG" if i % 2 else "JPEG")
             for i in range(n)}
    rng = np.random.default_rng(0)
    meta = {"camera_angles": {k: [float(rng.uniform(0.5, 2.5)), float(rng.uniform(1, 2)), 0.0] for k in files}}
    if labels:
        meta["labels"] = {k: i % 3 for i, k in enumerate(files)}
    return make_zip(tmp_path / "d.zip", files, meta), files, meta


def test_zip_and_folder_read_the_same(tmp_path):
    path, files, meta = posed_zip(tmp_path)
    folder = tmp_path / "folder"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "dataset.json").write_text(json.dumps(meta))
    a, b = ImageDataset(path, need_poses=True, use_labels=True), ImageDataset(folder, need_poses=True)
    assert len(a) == len(b) == 12 and a.resolution == 8 and a.num_classes == 3
    for i in range(12):
        assert all(torch.equal(x, y) if torch.is_tensor(x) else x == y for x, y in zip(a[i], b[i]))
    img, ang, lab = a[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 8, 8)
    assert torch.allclose(ang, torch.tensor(meta["camera_angles"][a.names[0]]))


def test_zip_to_parquet_round_trip(tmp_path):
    path, files, meta = posed_zip(tmp_path)
    out = tmp_path / "shards"
    info = convert(str(path), str(out), shard_size=5)
    assert info["num_images"] == 12 and len(list(out.glob("*.parquet"))) == 3
    src = ImageDataset(path)
    pds = open_dataset(str(out))
    assert isinstance(pds, ParquetDataset) and pds.resolution == 8 and pds.has_poses
    table = pq.read_table(out)  # JPEG sources are re-encoded losslessly: pixels must be identical
    by_path = {p: i for i, p in enumerate(table.column("path").to_pylist())}
    for j, name in enumerate(src.names):
        row = by_path[name]
        img = np.asarray(Image.open(io.BytesIO(table.column("image")[row].as_py()))).transpose(2, 0, 1)
        assert np.array_equal(img, src[j][0].numpy())
        assert np.allclose([table.column(k)[row].as_py() for k in ("yaw", "pitch", "roll")], src[j][1].numpy())
        assert table.column("label")[row].as_py() == int(src[j][2])
    items = list(pds.iter_epoch(0))
    assert len(items) == 12
    assert sorted(int(x[2]) for x in items) == sorted(meta["labels"].values())


def test_file_uri_and_resize_are_recorded(tmp_path):
    path, _, _ = posed_zip(tmp_path)
    out = tmp_path / "small"
    convert(str(path), str(out), resolution=4, resize_filter="bicubic")
    ds = open_dataset(f"file://{out}")
    assert ds.resolution == 4 and ds.meta["preprocessing"]["resize_filter"] == "bicubic"
    assert ds.meta["preprocessing"]["source_resolution"] == 8
    assert next(ds.iter_epoch(0))[0].shape == (3, 4, 4)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_shards_are_disjoint_and_cover_everything(tmp_path, world):
    for epoch in (0, 1):
        parts = [epoch_order(10, epoch, seed=7, rank=r, world=world) for r in range(world)]
        allidx = np.concatenate(parts)
        assert sorted(allidx.tolist()) == list(range(10))
    assert not np.array_equal(epoch_order(10, 0, 7, 0, 1), epoch_order(10, 1, 7, 0, 1))  # reshuffled per epoch
    path, _, _ = posed_zip(tmp_path, n=20)
    out = tmp_path / f"shards{world}"
    convert(str(path), str(out), shard_size=4)  # 5 files = 5 row groups
    seen = []
    for r in range(world):
        ds = ParquetDataset(str(out))
        ds.set_shard(r, world, seed=3)
        seen.append([int(img.sum()) for img, _, _ in ds.iter_epoch(0)])
    flat = [x for s in seen for x in s]
    assert len(flat) == 20 and len(set(flat)) == 20


def test_mirroring_flips_image_and_reflects_the_camera(tmp_path):
    path, files, meta = posed_zip(tmp_path, n=4)
    ds = ImageDataset(path, mirror=True, need_poses=True)
    assert len(ds) == 8 and math.isclose(ds.yaw_center, math.pi / 2)
    img, ang, _ = ds[1]
    fimg, fang, _ = ds[5]
    assert torch.equal(fimg, img.flip(-1))
    # reflecting the world through x = 0 (the centre view's plane) maps the camera to the mirrored pose
    m, mf = cam2world_matrix(ang[None]), cam2world_matrix(fang[None])
    reflect = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    assert torch.allclose(reflect @ m[0, :3, 3], mf[0, :3, 3], atol=1e-5)
    a = np.array([[0.3, 1.0, 0.1]], np.float32)
    assert np.allclose(mirror_angles(a, 0.0), [[-0.3, 1.0, -0.1]])  # datasets centred on yaw 0
    assert np.allclose(mirror_angles(mirror_angles(a, math.pi / 2), math.pi / 2), a, atol=1e-6)


def test_synthetic_dataset_is_multiview_with_depth(synthetic_zip, smoke_cfg):
    ds = ImageDataset(synthetic_zip, resolution=32, need_poses=True)
    assert len(ds) == 48 and ds.has_poses
    with zipfile.ZipFile(synthetic_zip) as z:
        depth = np.load(io.BytesIO(z.read("depth.npy")))
        meta = json.loads(z.read("dataset.json"))
    assert depth.shape == (48, 32, 32) and meta["synthetic"]["fov"] == smoke_cfg.dataset.camera.fov
    img = ds[0][0].numpy()
    background = (img == 255).all(0)
    assert background.any() and (~background).any()
    assert (depth[0][background] == 0).all()  # no surface: depth 0 ...
    d = depth[0][~background & (depth[0] > 0)]
    # ... surfaces lie around the origin, within the rendered ray range
    assert d.min() > smoke_cfg.dataset.camera.ray_start and d.max() < smoke_cfg.dataset.camera.ray_end
    yaws = ds.angles[:, 0]
    assert yaws.std() > 0.2  # many views, not one


def eg3d_labels(angles, radius, fov, flip_world=False):
    c2w = cam2world_matrix(torch.as_tensor(angles), radius) @ torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    if flip_world:
        c2w = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])) @ c2w
    fx = 1 / (2 * math.tan(math.radians(fov) / 2))
    K = np.array([fx, 0, 0.5, 0, fx, 0.5, 0, 0, 1])
    return np.concatenate([c2w.reshape(len(angles), 16).numpy(), np.tile(K, (len(angles), 1))], 1)


@pytest.mark.parametrize("flip_world", [False, True])
def test_eg3d_poses_convert_to_our_angles(flip_world):
    angles = np.array([[1.4, 1.5, 0.0], [1.9, 1.2, 0.0], [1.0, 1.7, 0.0]], np.float32)
    labels = eg3d_labels(angles, 2.7, 18.837, flip_world)
    labels[2, :16] = eg3d_labels(angles[2:], 2.9, 18.837, flip_world)[0, :16]  # one camera farther: its own radius
    got, rep = eg3d_to_angles(["a", "b", "c"], labels, 64)
    assert np.allclose(got[:, :3], angles, atol=1e-4) and np.allclose(got[:, 3], [2.7, 2.7, 2.9], atol=1e-5)
    fov = math.degrees(2 * math.atan(63 / 64 * math.tan(math.radians(18.837) / 2)))  # outer pixel centres at 64 px
    assert math.isclose(rep.radius, 2.7, rel_tol=1e-4) and math.isclose(rep.fov, fov, rel_tol=1e-6)
    assert not rep.outliers and [u[:2] for u in rep.unusual] == ["c:"]  # reported, kept
    assert rep.world_flipped == flip_world


def test_convert_with_eg3d_poses_cli(tmp_path):
    files = {f"{i}.png": png(seed=i) for i in range(3)}
    angles = np.array([[1.4, 1.5, 0.0], [1.9, 1.2, 0.0], [1.0, 1.7, 0.0]], np.float32)
    labels = eg3d_labels(angles, 2.7, 18.837, True)
    src = make_zip(tmp_path / "eg3d.zip", files, {"labels": [[k, labels[i].tolist()] for i, k in enumerate(files)]})
    res = subprocess.run([sys.executable, "-m", "gan3d.cli", "dataset", "convert", str(src), str(tmp_path / "out"),
                          "--poses", "eg3d"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    fov = math.degrees(2 * math.atan(7 / 8 * math.tan(math.radians(18.837) / 2)))  # 8 px images
    assert "(median 2.7000)" in res.stdout and f"fov {fov:.4f} deg" in res.stdout, res.stdout
    ds = open_dataset(str(tmp_path / "out"), need_poses=True)
    got = sorted((round(float(a[0]), 3), round(float(a[3]), 3)) for _, a, _ in ds.iter_epoch(0))
    assert got == sorted((round(float(a), 3), 2.7) for a in angles[:, 0])  # each camera keeps its radius


def eg3d_camera_labels(thetas, vs, radius=2.7, lookat=(0.0, 0.0, 0.2), fov_degrees=18.837):
    """Labels as EG3D's own camera code makes them (re-implemented from its documented behaviour: LookAtPoseSampler
    puts cameras on a sphere of `radius` around the ORIGIN and points them at `lookat`; create_cam2world_matrix with
    OpenCV axes; FOV_to_intrinsics' fx = 1 / (tan(fov / 2) x 1.414), principal point at the centre)."""
    out = []
    look = np.asarray(lookat)
    for theta, v in zip(thetas, vs):
        phi = math.acos(1 - 2 * min(max(v, 1e-5), math.pi - 1e-5) / math.pi)
        origin = radius * np.array([math.sin(phi) * math.cos(math.pi - theta), math.cos(phi),
                                    math.sin(phi) * math.sin(math.pi - theta)])
        forward = (look - origin) / np.linalg.norm(look - origin)
        right = -np.cross([0.0, 1.0, 0.0], forward)
        right /= np.linalg.norm(right)
        up = np.cross(forward, right)
        up /= np.linalg.norm(up)
        c2w = np.eye(4)
        c2w[:3, :3] = np.stack([right, up, forward], axis=-1)
        c2w[:3, 3] = origin
        focal = 1 / (math.tan(fov_degrees * 3.14159 / 360) * 1.414)
        out.append(np.concatenate([c2w.reshape(16), [focal, 0, 0.5, 0, focal, 0.5, 0, 0, 1]]))
    return np.stack(out)


def eg3d_rays(label, res):
    """EG3D's ray sampler for one camera: pixel (row j, column i) at uv = ((i + 0.5) / res, (j + 0.5) / res), lifted
    through the normalised intrinsics, rotated by the cam2world -> origins, unit directions [res * res, 3]."""
    c2w, K = label[:16].reshape(4, 4), label[16:].reshape(3, 3)
    j, i = np.meshgrid(np.arange(res), np.arange(res), indexing="ij")
    u, v = (i.ravel() + 0.5) / res, (j.ravel() + 0.5) / res
    cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], 1)
    d = cam @ c2w[:3, :3].T
    return np.broadcast_to(c2w[:3, 3], d.shape), d / np.linalg.norm(d, axis=1, keepdims=True)


def test_eg3d_cameras_keep_their_own_distance_and_every_ray_is_eg3ds():
    """EG3D's sampler over its FFHQ range (yaw +-0.6, pitch +-0.3, corners included): cameras on a sphere of 2.7
    around the origin looking at (0, 0, 0.2), so their distance from that point varies by ~1%. Converted, gan3d's
    rays at 512 px miss EG3D's own by < 0.05 px, and none of these cameras is called an outlier."""
    from gan3d.render.cameras import cam2world_matrix
    from gan3d.render.rays import ray_directions, world_rays
    yaws, pitches = np.meshgrid(np.linspace(-0.6, 0.6, 5), np.linspace(-0.3, 0.3, 3))
    thetas, vs = (math.pi / 2 + yaws).ravel(), (math.pi / 2 + pitches).ravel()
    labels = eg3d_camera_labels(thetas, vs)
    got, rep = eg3d_to_angles([f"{k}.png" for k in range(len(labels))], labels, 512)
    assert not rep.outliers and not rep.unusual and np.allclose(rep.lookat, (0, 0, 0.2), atol=1e-6)
    dist = np.linalg.norm(labels[:, [3, 7, 11]] - [0, 0, 0.2], axis=1)
    assert dist.max() / dist.min() - 1 > 0.005 and np.allclose(got[:, 3], dist, rtol=1e-6)
    pixel = math.radians(rep.fov) / 511  # the angle between neighbouring pixel centres near the centre
    for k in (0, 4, 7, 10, 14):  # corners and centre
        ours_o, ours_d = world_rays(cam2world_matrix(torch.as_tensor(got[k:k + 1, :3]), torch.as_tensor(got[k:k + 1, 3:])),
                                    ray_directions(512, rep.fov, batch=1))
        o, d = eg3d_rays(labels[k], 512)
        ours_o = ours_o[0].double().numpy() + [0, 0, 0.2]  # back in EG3D's world
        ours_d = ours_d[0].double().numpy()
        assert np.abs(ours_o - o).max() < 1e-5
        angle = np.arctan2(np.linalg.norm(np.cross(ours_d, d), axis=1), (ours_d * d).sum(1))  # well-conditioned at 0
        assert angle.max() / pixel < 0.05, (k, angle.max() / pixel)


def test_eg3d_cameras_are_recentred_on_their_lookat_point():
    """The import finds the point EG3D's cameras look at and gives each the angles and distance of a camera on
    gan3d's sphere around it."""
    thetas, vs = [math.pi / 2, 1.3, 1.9, 1.6], [math.pi / 2, 1.4, 1.75, 1.2]
    labels = eg3d_camera_labels(thetas, vs)
    got, rep = eg3d_to_angles(list("abcd"), labels, 64)
    d = labels[:, [3, 7, 11]] - [0, 0, 0.2]
    r = np.linalg.norm(d, axis=1)
    want = np.stack([np.arctan2(d[:, 2], d[:, 0]), np.arccos(d[:, 1] / r), np.zeros(4), r], 1)
    assert np.abs(got - want).max() < 1e-5
    assert np.allclose(rep.lookat, (0, 0, 0.2), atol=1e-5) and math.isclose(rep.radius, np.median(r), rel_tol=1e-6)
    assert math.isclose(rep.fov_eg3d, 18.837, rel_tol=1e-4)
    assert rep.max_axis_error < 1e-3 and not rep.outliers and not rep.world_flipped
    assert any("EG3D's fov_degrees for the same focal length: 18.837" in line for line in rep.lines())


def test_bad_eg3d_labels_each_get_one_line_naming_the_file(tmp_path):
    files = {f"{i}.png": png(seed=i) for i in range(5)}
    labels = eg3d_camera_labels([1.5, 1.6, 1.7, 1.4, 1.5], [1.5] * 5).tolist()
    labels[1] = labels[1][:16]  # no intrinsics
    labels[2][16] = float("nan")  # NaN fx
    labels[3][0] *= 1.5  # a scaled rotation
    src = make_zip(tmp_path / "eg3d.zip", files, {"labels": {k: labels[i] for i, k in enumerate(files)}})
    res = subprocess.run([sys.executable, "-m", "gan3d.cli", "dataset", "convert", str(src), str(tmp_path / "out"),
                          "--poses", "eg3d"], capture_output=True, text=True)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 3 and all("eg3d.zip" in line for line in lines)
    assert "'1.png'" in lines[0] and "16 numbers, expected 25" in lines[0]
    assert "'2.png'" in lines[1] and "not all finite" in lines[1]
    assert "'3.png'" in lines[2] and "not orthonormal" in lines[2]
    assert not (tmp_path / "out").exists()


def test_eg3d_cameras_that_cannot_belong_stop_convert_and_stray_ones_are_only_reported(tmp_path):
    """A camera looking 0.1 above the others' point (2 deg off: an estimate's error) is reported and kept; one looking
    1.5 away (29 deg off) cannot be a camera of this set: refused unless --allow-outliers."""
    files = {f"{i}.png": png(seed=i) for i in range(6)}
    thetas, vs = [1.0, 1.3, 1.6, 1.9, 2.1, 1.45], [1.3, 1.6, 1.8, 1.5, 1.4, 1.7]  # FFHQ's spread
    labels = eg3d_camera_labels(thetas, vs)
    labels[3] = eg3d_camera_labels(thetas[3:4], vs[3:4], lookat=(0.0, 0.1, 0.2))[0]
    labels[5] = eg3d_camera_labels(thetas[5:], vs[5:], lookat=(0.0, 1.5, 0.2))[0]
    src = make_zip(tmp_path / "eg3d.zip", files, {"labels": {k: labels[i].tolist() for i, k in enumerate(files)}})
    cmd = [sys.executable, "-m", "gan3d.cli", "dataset", "convert", str(src), str(tmp_path / "out"), "--poses", "eg3d"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 2 and "outlier: 5.png" in res.stderr and "--allow-outliers" in res.stderr, res.stderr
    assert "unusual (kept): 3.png" in res.stderr and "outlier: 3.png" not in res.stderr
    assert "0.0000, 0.2000)" in res.stderr  # robust to the strays: (+-0.0000, 0.0000, 0.2000)
    assert not (tmp_path / "out").exists()
    res = subprocess.run(cmd + ["--allow-outliers"], capture_output=True, text=True)
    assert res.returncode == 0 and "outlier: 5.png" in res.stdout, res.stderr
    res = subprocess.run([sys.executable, "-m", "gan3d.cli", "dataset", "validate", str(src)], capture_output=True, text=True)
    assert res.returncode == 1 and "look-at point" in res.stdout and "camera outlier 5.png" in res.stdout


def _expect(tmp_path, files, meta=None, match="", **kw):
    path = make_zip(tmp_path / "bad.zip", files, meta)
    with pytest.raises(DatasetError, match=match) as e:
        ImageDataset(path, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_bad_inputs_fail_with_one_clear_line(tmp_path):
    good = png()
    msg = _expect(tmp_path, {"x.png": good, "y.png": b"\x89PNG\r\n\x1a\nnot really"}, match="y.png: not a readable image")
    assert "bad.zip:y.png" in msg
    _expect(tmp_path, {"x.png": good, "notes.csv": b"a,b"}, match=r"notes.csv: not an image")
    _expect(tmp_path, {"x.png": good, "y.png": png(16, 16)}, match=r"y.png: image is 16x16 but x.png is 8x8")
    _expect(tmp_path, {"x.png": png(8, 6)}, match=r"x.png: image is 8x6; images must be square")
    _expect(tmp_path, {"x.png": good}, "{not json", match=r"dataset.json: not valid JSON")
    _expect(tmp_path, {"x.png": good}, {"camera_angles": {"gone.png": [1, 1, 0]}},
            match=r"camera_angles for 1 file\(s\) not in the dataset, e.g. 'gone.png'")
    _expect(tmp_path, {"x.png": good, "y.png": png(seed=2)}, {"camera_angles": {"x.png": [1, 1, 0]}},
            match=r"camera poses are required but 1 image\(s\) have none, e.g. 'y.png'", need_poses=True)
    _expect(tmp_path, {"x.png": good}, {"camera_angles": {"x.png": [4.0, 1, 0]}}, match=r"yaw 4.0 is outside \[-pi, pi\]")
    _expect(tmp_path, {"x.png": good}, {"camera_angles": {"x.png": [1.0, -0.5, 0]}}, match=r"pitch -0.5 is outside \[0, pi\]")
    _expect(tmp_path, {"x.png": good}, {"labels": {"x.png": "cat"}}, match=r"labels\['x.png'\] = 'cat': expected a non-negative integer")
    _expect(tmp_path, {"x.png": good}, {"camera_angles": {"x.png": [0, 0, 0]}}, match=r"every camera angle is zero")
    _expect(tmp_path, {}, match=r"no images found")
    with pytest.raises(DatasetError, match=r"missing.zip: dataset not found"):
        ImageDataset(tmp_path / "missing.zip")


def test_truncated_image_fails_on_read_naming_the_file(tmp_path):
    full = png(32, 32)
    ds = ImageDataset(make_zip(tmp_path / "t.zip", {"x.png": full[: len(full) // 2]}))
    with pytest.raises(DatasetError, match=r"t.zip:x.png: corrupt, truncated or not an image"):
        ds[0]


def test_parquet_missing_columns(tmp_path):
    (tmp_path / "p").mkdir()
    pq.write_table(pa.table({"image": [b"x"], "path": ["a"]}), tmp_path / "p" / "part-0.parquet")
    with pytest.raises(DatasetError, match=r"part-0.parquet: Parquet file lacks column\(s\) yaw, pitch, roll, label"):
        open_dataset(str(tmp_path / "p"))


def test_validate_reports_every_problem_in_one_pass(tmp_path):
    files = {"ok.png": png(), "big.png": png(16, 16), "bad.png": b"garbage", "readme.doc": b"hi",
             "wide.png": png(8, 4)}
    meta = {"camera_angles": {"ok.png": [9.0, 1.0, 0.0]}, "labels": {"ok.png": 1.5}}
    path = make_zip(tmp_path / "v.zip", files, meta)
    rep = validate(str(path), need_poses=True, png=str(tmp_path / "cams.png"))
    text = "\n".join(rep.problems)
    for needle in ("bad.png", "readme.doc: not an image", "mixed image sizes", "wide.png: image is 8x4",
                   "yaw 9.0 is outside", "labels['ok.png'] = 1.5", "camera poses are required"):
        assert needle in text, needle
    assert not rep.ok and (tmp_path / "cams.png").is_file()
    res = subprocess.run([sys.executable, "-m", "gan3d.cli", "dataset", "validate", str(path)],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "usable: NO" in res.stdout


def test_validate_a_good_dataset_summarises_it(synthetic_zip, tmp_path):
    res = subprocess.run([sys.executable, "-m", "gan3d.cli", "dataset", "validate", str(synthetic_zip),
                          "--require-poses", "--png", str(tmp_path / "c.png")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
    assert "images: 48" in res.stdout and "resolution: 32x32" in res.stdout and "mean pose: yaw" in res.stdout
    assert Image.open(tmp_path / "c.png").size[0] > 100


def test_forked_loader_workers_read_a_zip_safely(synthetic_zip):
    from gan3d.data import real_batches

    ds = ImageDataset(synthetic_zip)
    it = real_batches(ds, 16, rank=0, world=1, seed=0, num_workers=2)
    for _ in range(6):  # more than an epoch: every worker reads the same archive concurrently
        images, angles, labels = next(it)
        assert images.shape == (16, 3, 32, 32)


def blender_camera(pos, target):
    """cam2world of a Blender camera at `pos` tracking `target` in Blender's z-up world (Track To: local -Z at the
    target, local +Y towards world +Z), as NeRF-synthetic's transform_matrix holds it."""
    pos, target = np.asarray(pos, float), np.asarray(target, float)
    forward = (target - pos) / np.linalg.norm(target - pos)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, -forward, pos
    return m


def nerf_scene(root, positions, center=(0.3, -0.2, 0.5), fov=0.6911, extra_frames=()):
    """A NeRF-synthetic-style folder: transforms_train.json (+ RGBA PNGs without extension in file_path)."""
    (root / "train").mkdir(parents=True)
    frames = []
    for i, p in enumerate(positions):
        rgba = np.zeros((8, 8, 4), np.uint8)
        rgba[2:6, 2:6] = (200, 30, 30, 255)  # an opaque square on a transparent background
        Image.fromarray(rgba, "RGBA").save(root / "train" / f"r_{i}.png")
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix":
                       blender_camera(np.add(center, p), center).tolist()})
    frames += list(extra_frames)
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": fov, "frames": frames}))
    return root


def test_nerf_transforms_convert_to_our_angles_around_their_centre(tmp_path):
    """Blender's z-up world -> gan3d's y-up: a camera at offset (x, y, z) from the centre sits at gan3d position
    (x, z, -y), so pitch = acos(z / r) and yaw = atan2(-y, x)."""
    offsets = [(4.0, 0.0, 1.0), (0.0, -4.0, 2.0), (-3.0, 2.0, -1.0), (2.0, 3.0, 2.5)]
    src = nerf_scene(tmp_path / "lego", offsets)
    res = subprocess.run([sys.executable, "-m", "gan3d.cli", "dataset", "convert", str(src), str(tmp_path / "out"),
                          "--poses", "nerf"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    # camera_angle_x spans the outer pixel edges of the 8 px images, gan3d's fov their outer pixel centres
    fov = math.degrees(2 * math.atan(math.tan(0.6911 / 2) * 7 / 8))
    assert "world up +z -> +y" in res.stdout and f"fov {fov:.3f} deg = dataset.camera.fov" in res.stdout
    rows = pq.read_table(sorted((tmp_path / "out").rglob("*.parquet"))[0]).to_pylist()
    got = {int(r["path"].split("_")[-1].split(".")[0]): [r["yaw"], r["pitch"], r["roll"], r["radius"]] for r in rows}
    for i, (x, y, z) in enumerate(offsets):
        r = math.sqrt(x * x + y * y + z * z)  # each camera keeps its own distance
        assert np.allclose(got[i], [math.atan2(-y, x), math.acos(z / r), 0.0, r], atol=1e-4), (i, got[i])
    img = np.asarray(Image.open(io.BytesIO(rows[0]["image"])))
    assert img[0, 0].tolist() == [255, 255, 255] and img[4, 4].tolist() == [200, 30, 30]  # alpha over white
    assert open_dataset(str(tmp_path / "out"), need_poses=True) is not None  # trains as a posed dataset


def test_bad_nerf_frames_are_one_line_naming_the_frame(tmp_path):
    good = [(4.0, 0.0, 1.0), (0.0, -4.0, 2.0), (-3.0, 2.0, -1.0)]
    scaled = blender_camera((4.3, -0.2, 0.5), (0.3, -0.2, 0.5))
    scaled[:3, :3] *= 1.1
    cases = {"not orthonormal": scaled.tolist(), "expected 4x4": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}
    for i, (needle, matrix) in enumerate(cases.items()):
        root = tmp_path / f"case{i}"
        nerf_scene(root, good, extra_frames=[{"file_path": "./train/r_0", "transform_matrix": matrix}])
        with pytest.raises(DatasetError, match=needle) as err:
            convert(str(root), str(tmp_path / f"o{i}"), poses="nerf")
        assert str(err.value).startswith(f"{root / 'transforms_train.json'}: frame './train/r_0'")
        assert not (tmp_path / f"o{i}").exists()  # nothing written
    root = nerf_scene(tmp_path / "missing", good, extra_frames=[
        {"file_path": f"./train/r_{i}", "transform_matrix": np.eye(4).tolist()} for i in (7, 8, 9)])
    with pytest.raises(DatasetError, match=r"3 of 6 frames name no image in it: './train/r_7', './train/r_8', "
                                           r"'./train/r_9'$"):
        convert(str(root), str(tmp_path / "o9"), poses="nerf")


def test_cameras_with_their_own_radius_load_and_mixed_widths_are_refused(tmp_path):
    files = {f"{i}.png": png(seed=i) for i in range(3)}
    poses = {f"{i}.png": [1.5 + 0.1 * i, 1.4, 0.0, 2.6 + 0.01 * i] for i in range(3)}
    ds = ImageDataset(make_zip(tmp_path / "r.zip", files, {"camera_angles": poses}), mirror=True)
    assert ds.angles.shape == (3, 4) and np.allclose(ds.all_angles()[3:, 3], ds.angles[:, 3])  # mirrors keep it
    _, a, _ = ds[4]
    assert a.shape == (4,) and a[3] == pytest.approx(2.61)
    poses["1.png"] = [1.5, 1.4, 0.0]
    msg = _expect(tmp_path, files, {"camera_angles": poses}, match="mixes 3 and 4 numbers")
    assert "'1.png'" in msg
    poses["1.png"] = [1.5, 1.4, 0.0, -1.0]
    _expect(tmp_path, files, {"camera_angles": poses}, match="radius -1.0 must be > 0")
