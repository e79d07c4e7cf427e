"""Data nobody here made, as a new user brings it: a rendered two-class object set (assembled by the render's own
code: class/asset/0000.png in every asset folder, cameras all around), a conditional model trained on its poses,
a capture's transforms.json with roll and off-centre axes, conversions to a .zip."""
import json
import math
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from gan3d.config import load_config
from gan3d.data import open_dataset
from gan3d.data.blender import RenderSettings, asset_id
from gan3d.data.rendered import assemble
from gan3d.data.convert import convert
from gan3d.data.dataset import resolve_labels
from gan3d.draws import seeded
from gan3d.errors import ConfigError, DatasetError
from gan3d.tools.inversion import camera_report
from gan3d.nn import build_discriminator, build_generator
from gan3d.render.cameras import sample_camera_angles, wrap_yaw
from gan3d.render.views import TrainedViews, subsample
from gan3d.training.checkpoint import Counters, load_generator, write_checkpoint
from conftest import SMOKE
from test_data import blender_camera, nerf_scene

ASSETS = ("creatures/cow.obj", "objects/woody.obj")
RES = 32


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "gan3d.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    """A two-class set as `gan3d dataset render` leaves it (each asset's views in parts/<asset>/, then its
    assemble step), unpacked; and a conditional generator that trained on its poses (dist=dataset), as a run dir."""
    root = tmp_path_factory.mktemp("objects")
    s = RenderSettings(views=16, resolution=RES)
    records = []
    for k, rel in enumerate(ASSETS):
        out = root / "parts" / asset_id(rel)
        out.mkdir(parents=True)
        angles = wrap_yaw(sample_camera_angles(s.views, s.camera, seeded(k)))  # all around, as the render draws
        views = []
        for i, a in enumerate(angles):
            Image.fromarray(np.full((RES, RES, 3), 60 + 120 * k + i, np.uint8)).save(out / f"{i:04d}.png")
            views.append({"file": f"{i:04d}.png", "angles": a.tolist()})
        records.append({"asset": rel, "views": views, "normalisation": {"center": [0, 0, 0], "scale": 1.0},
                        "renderer": "Blender 4.2.0", "seed": k})
    zip_path = root / "objects.zip"
    assemble(root / "parts", records, zip_path, s, labels_from_folders=True)
    unpacked = root / "objects"
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(unpacked)
    cfg = load_config(SMOKE, [f"dataset.path={zip_path}", f"dataset.resolution={RES}", "dataset.use_labels=true",
                              "dataset.camera.dist=dataset", "dataset.camera.fov=30", "dataset.camera.radius=1",
                              "dataset.camera.ray_start=0.75", "dataset.camera.ray_end=1.25"])
    ds = open_dataset(str(zip_path), RES, use_labels=True, need_poses=True)
    cfg, _ = resolve_labels(cfg, ds, str(zip_path))
    torch.manual_seed(0)
    G, D = build_generator(cfg).eval(), build_discriminator(cfg)
    run = root / "run"
    views = TrainedViews(subsample(torch.as_tensor(ds.pose_pool()[0])), "dataset", cfg.dataset.camera)
    write_checkpoint(run / "checkpoint_000000", cfg, {"G": G, "G_ema": G, "D": D}, {}, Counters(), {}, {},
                     extra_state=views.stored())
    return zip_path, unpacked, run, cfg


def test_invert_finds_each_images_camera_by_its_path_inside_the_dataset(objects, tmp_path):
    zip_path, unpacked, run, _ = objects
    poses = json.loads((unpacked / "dataset.json").read_text())["camera_angles"]
    cow, woody = unpacked / "creatures/cow/0002.png", unpacked / "objects/woody/0002.png"
    res = cli("invert", run, cow, woody, "--poses", unpacked / "dataset.json", "--out", tmp_path / "inv",
              "--mode", "w", "--steps", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    for image, folder in ((cow, "cow_0002"), (woody, "woody_0002")):  # one folder each, not one overwriting the other
        camera = json.loads((tmp_path / "inv" / folder / "camera.json").read_text())
        want = poses[image.relative_to(unpacked).as_posix()]
        assert [camera["yaw"], camera["pitch"]] == pytest.approx(want[:2], abs=1e-6), folder
    stray = tmp_path / "0002.png"  # the same file name outside the dataset: ambiguous, said in one line
    shutil.copy(cow, stray)
    res = cli("invert", run, stray, "--poses", unpacked / "dataset.json", "--out", tmp_path / "o", "--steps", "1")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (f"gan3d: error: --poses {unpacked / 'dataset.json'}: {stray}: 2 entries are named "
                                  f"0002.png (creatures/cow/0002.png, objects/woody/0002.png) and its path names none "
                                  f"of them; give the image by its path inside {unpacked}")


def test_a_conditional_model_renders_and_inverts_the_class_asked_for(objects, tmp_path):
    zip_path, _, run, cfg = objects
    assert cfg.dataset.c_dim == 2  # use_labels with c_dim 0: the dataset's own count
    grids = {}
    for k in (0, 1):
        res = cli("render", run, "--class", k, "--seeds", "0-1", "--out", tmp_path / f"c{k}")
        assert res.returncode == 0, res.stderr[-2000:]
        grids[k] = np.asarray(Image.open(tmp_path / f"c{k}" / "front_grid.png"), np.float32)
    assert np.abs(grids[0] - grids[1]).mean() > 0.5  # another class is another image
    res = cli("render", run, "--class", 2, "--out", tmp_path / "c2")
    assert res.returncode == 2 and res.stderr.strip() == "gan3d: error: --class 2: this model has 2 classes (0-1)"
    res = cli("render", run, "--seeds", "0")  # no --out: beside the checkpoint
    assert res.returncode == 0 and (run / "renders" / "checkpoint_000000" / "front_grid.png").is_file(), res.stderr
    ds = open_dataset(str(zip_path), RES)
    unconditional = load_config(SMOKE, ["dataset.c_dim=2"])
    same, notes = resolve_labels(unconditional, ds, "objects.zip")
    assert same.dataset.c_dim == 2 and notes == ["objects.zip has labels (2 classes), unused: dataset.use_labels "
                                                 "is false, so the model is unconditional (dataset.use_labels=true "
                                                 "conditions it on them)"]
    with pytest.raises(ConfigError, match=r"'dataset.c_dim' = 1 is not allowed: objects.zip has labels 0-1"):
        resolve_labels(load_config(SMOKE, ["dataset.use_labels=true", "dataset.c_dim=1"]), ds, "objects.zip")


def test_cameras_are_judged_against_the_views_the_run_trained_on(objects, tmp_path):
    _, unpacked, run, cfg = objects
    G = load_generator(run)  # a run directory, as every command takes
    views = TrainedViews.of(G)
    assert views.source == "dataset" and views.all_around
    cam = cfg.dataset.camera  # the config's prior (yaw 1.57 +- 0.3) knows nothing of the sphere trained on
    behind = torch.tensor([cam.yaw_mean + 4.9 * 0.6, 1.4, 0.0])  # 4.9 std of the prior away, inside the sphere
    report, warning = camera_report(G, behind)
    assert warning is None and report["trained_views"] == "dataset", report
    G.trained_views = torch.tensor([[cam.yaw_mean, 1.4]] * 4)  # had it seen only the front, it would warn
    assert "from the nearest view the generator trained on" in camera_report(G, behind)[1]
    G.trained_views = None
    prior = camera_report(G, behind)  # without stored views: the prior's
    assert prior[0]["trained_views"] == "prior" and prior[1] is not None
    path = TrainedViews.of(load_generator(run)).path("auto", 12)  # a full orbit, not an ellipse around "front"
    assert torch.allclose(path[1:, 0] - path[:-1, 0], torch.full((11,), 2 * math.pi / 12))
    res = cli("dataset", "validate", unpacked)
    assert "views: all around the object" in res.stdout and "mean pose" not in res.stdout, res.stdout


def test_a_captures_every_problem_is_named_in_one_line(tmp_path):
    centre = np.array([0.3, -0.2, 0.5])
    frames = []
    for i in range(8):
        yaw = 2 * math.pi * i / 8
        pos = centre + 4.0 * np.array([math.cos(yaw), math.sin(yaw), 0.4])
        m = blender_camera(pos, centre + (np.array([0.0, 0.0, 0.9]) if i % 2 else 0))  # every other aims off-centre
        if i % 4 == 1:  # rolled about the optical axis by 0.3 rad
            c, s = math.cos(0.3), math.sin(0.3)
            m[:3, :2] = m[:3, :2] @ np.array([[c, s], [-s, c]])
        frames.append(m)
    root = nerf_scene(tmp_path / "capture", [])
    for i, m in enumerate(frames):
        Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(root / "train" / f"r_{i}.png")  # 12x8: not square
    meta = {"camera_angle_x": 0.7, "frames": [{"file_path": f"./train/r_{i}", "transform_matrix": m.tolist()}
                                              for i, m in enumerate(frames)]}
    (root / "transforms_train.json").write_text(json.dumps(meta))
    res = cli("dataset", "convert", root, tmp_path / "out.zip", "--poses", "nerf")
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    line = res.stderr
    assert f"{root}: not a capture gan3d can take: optical axes of " in line
    assert "have roll (up to " in line and "8 of 8 images are not square (e.g. 12x8; convert does not crop)" in line
    assert "gan3d takes object-centred captures" in line and not (tmp_path / "out.zip").exists()
    for i in range(8):  # square photos: --allow-outliers converts the rest anyway, and says what it let through
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / f"r_{i}.png")
    refused = cli("dataset", "convert", root, tmp_path / "out.zip", "--poses", "nerf")
    assert refused.returncode == 2 and "(--allow-outliers converts anyway)" in refused.stderr
    # counted over every frame (the common centre is a compromise, so all miss it), not the first one alone
    assert "optical axes of 8 of 8 frames (e.g. './train/r_0', './train/r_1') miss the cameras' common centre" in \
        refused.stderr
    assert "2 of 8 frames (e.g. './train/r_1', './train/r_5') have roll (up to 17.2 deg" in refused.stderr
    ok = cli("dataset", "convert", root, tmp_path / "out.zip", "--poses", "nerf", "--allow-outliers")
    assert ok.returncode == 0 and "converted anyway (--allow-outliers): optical axes" in ok.stdout, ok.stderr


def test_convert_writes_the_zip_asked_for_and_a_renders_cameras_come_back_whole(objects, tmp_path):
    zip_path, _, _, _ = objects
    res = cli("dataset", "convert", zip_path, tmp_path / "again.zip", "--poses", "nerf")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith(f"to {tmp_path / 'again.zip'}: a zip (PNGs + dataset.json)")
    assert zipfile.is_zipfile(tmp_path / "again.zip")  # a file, not a directory of shards named .zip
    again = open_dataset(str(tmp_path / "again.zip"), use_labels=True, need_poses=True)
    before = open_dataset(str(zip_path), use_labels=True, need_poses=True)
    assert sorted(again.names) == sorted(before.names)
    order = [again.names.index(n) for n in before.names]
    assert np.array_equal(again.labels[order], before.labels)  # the classes survive
    d = again.angles[order][:, :3] - before.angles
    d[:, 0] = (d[:, 0] + math.pi) % (2 * math.pi) - math.pi
    assert np.abs(d).max() < 1e-4
    meta = json.loads(zipfile.ZipFile(tmp_path / "again.zip").read("dataset.json"))
    assert meta["poses"]["fov"] == pytest.approx(30.0, abs=1e-4)  # the render's widening undone
    with pytest.raises(DatasetError, match="a directory is there"):
        (tmp_path / "dir.zip").mkdir()
        convert(str(zip_path), str(tmp_path / "dir.zip"))
