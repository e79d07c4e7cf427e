"""gan3d eval / render / report on a real (tiny) trained run, and their bad inputs."""
import html.parser
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import gan3d
from gan3d.config import load_config
from gan3d.training.checkpoint import best_checkpoint, list_checkpoints
from gan3d.training.loop import training_loop
from gan3d.training.session import LocalSession
from conftest import SMOKE, TINY


def cli(*args):
    return subprocess.run([sys.executable, "-m", "gan3d.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, synthetic_zip):
    d = tmp_path_factory.mktemp("evalrun") / "tiny"
    cfg = load_config(SMOKE, TINY + ["training.metric_kimg=0.016", "training.image_kimg=0.016"])
    training_loop(cfg, d, LocalSession(d), str(synthetic_zip), "tiny")
    return d


def test_eval_picks_the_best_checkpoint_and_writes_eval_json(run_dir):
    ckpts = list_checkpoints(run_dir)
    assert len(ckpts) == 3
    best, metric = best_checkpoint(run_dir)
    swds = [json.loads((p / "meta.json").read_text())["metrics"]["swd"] for p in ckpts]
    assert metric == "swd" and best == ckpts[int(np.argmin(swds))]
    res = cli("eval", run_dir, "--metrics", "swd", "--num-fakes", "16")
    assert res.returncode == 0, res.stderr
    assert "swd" in res.stdout and str(best) in res.stdout
    assert "protocol swd: 16 fakes vs 16 reals" in res.stdout  # says how it measured
    data = json.loads((run_dir / "eval.json").read_text())
    assert data["checkpoint"] == str(best) and data["metrics"]["swd"] > 0
    assert data["protocols"]["swd"]["num_fakes"] == 16


def test_eval_on_ray_workers(run_dir, one_node_ray):
    from gan3d.tools.evaluate import evaluate_run
    res = evaluate_run(run_dir, ["swd"], num_fakes=16, workers=2)
    assert res.values["swd"] > 0 and res.protocols["swd"]["num_fakes"] == 16


def test_render_grid_video_and_mesh(run_dir, tmp_path):
    res = cli("render", run_dir, "--vis", "front_grid", "--seeds", "0-3", "--out", tmp_path / "g")
    assert res.returncode == 0, res.stderr
    from PIL import Image
    assert Image.open(tmp_path / "g" / "front_grid.png").size == (64, 64)  # 2 x 2 grid of 32 px
    res = cli("render", run_dir, "--vis", "video", "--camera", "line", "--seeds", "5", "--frames", "12",
              "--out", tmp_path / "v")
    assert res.returncode == 0, res.stderr
    import imageio.v3 as iio
    frames = iio.imread(tmp_path / "v" / "video_seed0005.mp4")
    assert frames.shape[0] == 12  # one frame per camera on the path
    res = cli("render", run_dir, "--vis", "geometry", "--seeds", "1", "--grid-resolution", "32",
              "--out", tmp_path / "m")
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "m" / "seed0001.ply").read_text()
    header, body = text.split("end_header\n")
    n = int(header.split("element vertex ")[1].split()[0])
    verts = np.loadtxt(body.splitlines()[:n])
    assert n > 0 and np.isfinite(verts).all()
    # the mesh is the density's level set: its bounding box is that of the voxels above the level (+- a voxel)
    import mrcfile
    with mrcfile.open(tmp_path / "m" / "seed0001.mrc") as mrc:
        sigma = np.asarray(mrc.data).transpose(2, 1, 0)  # back to x, y, z
    cube = 2 * 0.4  # smoke's cube_scale 0.4
    inside = np.argwhere(sigma > np.percentile(sigma, 90)) / (32 - 1) * cube - cube / 2  # voxel -> world
    voxel = cube / 31
    assert sigma.shape == (32, 32, 32)
    assert (verts.min(0) >= inside.min(0) - voxel - 1e-6).all() and (verts.max(0) <= inside.max(0) + voxel + 1e-6).all()
    assert (np.abs(verts.min(0) - inside.min(0)) < voxel + 1e-6).all()


def test_python_render_and_export_mesh(run_dir, tmp_path):
    best, _ = best_checkpoint(run_dir)
    G = gan3d.load_generator(best)
    a = G.render([0, 1], torch.tensor([1.57, 1.3, 0.0]))
    b = G.render([0, 1], torch.tensor([1.57, 1.3, 0.0]))
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)  # seeds and constant noise: reproducible
    paths = gan3d.export_mesh(G, 0, tmp_path, resolution=24)
    assert paths["ply"].is_file() and paths["obj"].read_text().count("\nv ") > 0


class _Collect(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(path):
    p = _Collect()
    p.feed(path.read_text())
    return p


def test_report_html_has_table_plots_and_samples(run_dir, tmp_path):
    out = tmp_path / "r.html"
    res = cli("report", run_dir, "--out", out, "--wandb")
    assert res.returncode == 0, res.stderr
    p = parse(out)
    imgs = [a for t, a in p.tags if t == "img"]
    assert any(a["alt"] == "swd vs kimg" for a in imgs) and any(a["alt"].startswith("samples ") for a in imgs)
    assert all(a["src"].startswith("data:image/png;base64,") for a in imgs)  # self-contained
    assert any(t == "table" for t, _ in p.tags) and "tiny" in "".join(p.text)
    assert "W&B is offline" in res.stdout
    definition = json.loads(out.with_suffix(".wandb-report.json").read_text())
    assert "gan3d comparison" in json.dumps(definition)


@pytest.mark.parametrize("args, message", [
    (["eval", "{tmp}/nockpt"], "no gan3d checkpoints in this run directory"),
    (["eval", "{tmp}/fake/checkpoint_1"], "not a gan3d checkpoint"),
    (["eval", "{run}", "--metrics", "swd", "--data", "/no/such.zip"], "/no/such.zip: dataset not found"),
    (["render", "{run}", "--vis", "hologram", "--out", "{tmp}/o"], "--vis 'hologram': expected one of front_grid"),
    (["render", "{run}", "--vis", "video", "--camera", "spiral", "--out", "{tmp}/o"], "--camera 'spiral': expected one of"),
    (["report", "{tmp}/nockpt"], "neither a run"),
])
def test_bad_inputs_one_clear_line(run_dir, tmp_path, args, message):
    (tmp_path / "nockpt").mkdir()
    (tmp_path / "fake" / "checkpoint_1").mkdir(parents=True)
    (tmp_path / "fake" / "checkpoint_1" / "state.pt").write_bytes(b"junk")
    res = cli(*[a.format(tmp=tmp_path, run=run_dir) for a in args])
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [l for l in res.stderr.strip().splitlines() if l.startswith("gan3d: error:")]
    assert len(lines) == 1 and message in lines[0], res.stderr
