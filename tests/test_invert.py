"""`gan3d invert` on images whose truth is known: rendered by a generator from known latents and cameras."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import gan3d
from gan3d.config import load_config
from gan3d.tools.inversion import render_ws
from gan3d.metrics.similarity import psnr
from gan3d.nn import build_discriminator, build_generator
from gan3d.track import media
from gan3d.track.wandb_reader import find_run_file, history
from gan3d.training.checkpoint import Counters, load_generator, write_checkpoint
from conftest import SMOKE


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """A generator (saved as a gan3d checkpoint), two latents' renders at known cameras, saved as PNGs."""
    torch.manual_seed(0)
    cfg = load_config(SMOKE)
    G, D = build_generator(cfg).eval().requires_grad_(False), build_discriminator(cfg)
    root = tmp_path_factory.mktemp("invert")
    ckpt = write_checkpoint(root / "ckpt", cfg, {"G": G, "G_ema": G, "D": D}, {}, Counters(), {}, {})
    z = torch.randn(2, G.cfg.z_dim, generator=torch.Generator().manual_seed(5))
    cams = torch.tensor([[G.camera.yaw_mean + 0.2, G.camera.pitch_mean, 0.0],
                         [G.camera.yaw_mean - 0.2, G.camera.pitch_mean, 0.0]])
    with torch.no_grad():
        ws = G.map(z, None, cams)
        imgs = render_ws(G, ws, cams, 32)
    files = []
    for i, img in enumerate(imgs):
        files.append(media.save_png(media.image_grid(((img[None] + 1) * 127.5).round().clamp(0, 255).byte()),
                                    root / f"face{i}.png"))
    return G, ws, cams, imgs, ckpt, files


def test_wplus_reduces_the_loss_and_pti_improves_on_it(known):
    G, ws_true, cams, imgs, _, _ = known
    target, cam = imgs[:1], cams[:1]
    wplus = gan3d.invert(G, target, cam, mode="wplus", steps=80)[0]
    pti = gan3d.invert(G, target, cam, mode="pti", steps=80, pti_steps=60)[0]
    assert wplus.loss[-1] < wplus.loss[0] / 3  # the projection converges
    assert pti.metrics["psnr"] > wplus.metrics["psnr"] + 0.2  # tuning the generator fits better than the latent alone
    assert wplus.ws.shape == ws_true[:1].shape and wplus.G is not G  # G itself untouched
    with torch.no_grad():  # a novel view (+0.52 rad yaw) of the inverted latent against the truth's
        side = cam + torch.tensor([[0.52, 0.0, 0.0]])
        truth = render_ws(G, ws_true[:1], side, 32)
        w_mean = G.map(torch.randn(500, G.cfg.z_dim), None, cam.expand(500, -1)).mean(0, keepdim=True)
        mean_face = render_ws(G, w_mean, side, 32)
        assert psnr(render_ws(pti.G, pti.ws, side, 32), truth) > psnr(mean_face, truth) + 3


def test_a_fitted_fov_moves_towards_the_one_the_photo_was_taken_with(known):
    G, ws_true, cams, _, _, _ = known
    true_fov = G.camera.fov * 1.2
    with torch.no_grad():
        target = render_ws(G, ws_true[:1], cams[:1], 32, fov=torch.tensor(true_fov))
    fitted = gan3d.invert(G, target, cams[:1], mode="wplus", steps=80, fit_fov=True)[0]
    fov = fitted.G.camera.fov  # the image's generator copy carries it
    assert abs(fov - true_fov) < 0.5 * abs(G.camera.fov - true_fov), (G.camera.fov, fov, true_fov)
    assert G.camera.fov == true_fov / 1.2  # the caller's generator keeps its own


def test_invert_cli_over_two_ray_workers_writes_outputs_other_commands_open(one_node_ray, known, tmp_path):
    _, _, cams, _, ckpt, files = known
    poses = tmp_path / "dataset.json"
    poses.write_text(json.dumps({"camera_angles": {f.name: c.tolist() for f, c in zip(files, cams)}}))
    out = tmp_path / "inv"
    cmd = [sys.executable, "-m", "gan3d.cli", "invert", str(ckpt), str(files[0].parent), "--out", str(out),
           "--poses", str(poses), "--steps", "20", "--pti-steps", "10", "--workers", "2",
           "--address", os.environ["GAN3D_TEST_RAY_ADDRESS"], "--wandb"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "gan3d: inverted 2 image(s)" in res.stdout and "1-ms-ssim as the perceptual term" in res.stdout
    for f in files:
        d = out / f.stem
        metrics = json.loads((d / "metrics.json").read_text())
        assert metrics["perceptual"] == "1-ms-ssim" and metrics["mode"] == "pti" and metrics["psnr"] > 10
        assert np.load(d / "latent.npz")["ws"].shape == (load_generator(ckpt).synthesis.num_ws, 64)
        assert json.loads((d / "camera.json").read_text())["fitted"] is False
        assert (d / "reconstruction.png").is_file() and list(d.glob("orbit.*"))
        header = (d / "mesh.ply").read_text().split("end_header")[0]
        assert int(header.split("element vertex ")[1].split()[0]) > 0
        G_pti = load_generator(d / "G_pti")  # the tuned generator is a gan3d checkpoint
        assert G_pti.synthesis.num_ws == np.load(d / "latent.npz")["ws"].shape[0]
    rows = history(find_run_file(out))  # the offline W&B run: one row per image
    assert sorted(r["image_index"] for r in rows) == [0, 1] and all(r["psnr"] > 10 for r in rows)
    rendered = subprocess.run([sys.executable, "-m", "gan3d.cli", "render", str(out / files[0].stem / "G_pti"),
                               "--seeds", "0-1", "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert rendered.returncode == 0 and (tmp_path / "r" / "front_grid.png").is_file(), rendered.stderr[-2000:]


def test_bad_inputs_are_one_line(known, tmp_path):
    _, _, _, _, ckpt, files = known
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    gray = tmp_path / "gray.png"
    media.save_png(np.zeros((8, 8, 3), np.uint8), gray)
    from PIL import Image
    Image.open(gray).convert("L").save(gray)

    def run(*args):
        r = subprocess.run([sys.executable, "-m", "gan3d.cli", "invert", str(ckpt), *args, "--out", str(tmp_path / "o"),
                            "--steps", "1", "--mode", "w"], capture_output=True, text=True)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        return r.stderr.strip()

    assert run(str(bad)).startswith(f"gan3d: error: {bad}: not a readable image")
    assert run(str(gray)) == f"gan3d: error: {gray}: 1 channel(s); expected RGB or RGBA"
    assert "--camera '0.1': expected 2 comma-separated finite numbers" in run(str(files[0]), "--camera", "0.1")
    assert "--camera 'nan,inf': expected 2 comma-separated finite numbers" in run(str(files[0]), "--camera", "nan,inf")
    text = tmp_path / "notes.txt"
    text.write_text("a text file given as an image " * 20)
    assert run(str(text)) == f"gan3d: error: {text}: not a readable image (PNG, JPEG, WebP, ...; " + run(str(text)).split("; ")[-1]
    assert run(str(text)).endswith(")")  # the line is whole, not cut mid-word
    not_a_generator = tmp_path / "run"
    not_a_generator.mkdir()
    (not_a_generator / "notes.txt").write_text("no checkpoint here")
    r = subprocess.run([sys.executable, "-m", "gan3d.cli", "invert", str(not_a_generator), str(files[0]), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith(f"gan3d: error: {not_a_generator}") and "Traceback" not in r.stderr


def test_images_of_any_size_are_cropped_composited_and_resized(tmp_path):
    from gan3d.tools.inversion import load_image

    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[:, 5:25, :3] = 255  # the centred 20x20 square is white; columns 0-4 and 25-29 are black
    rgba[:, :, 3] = 255
    rgba[:10, 10:20, 3] = 0  # a transparent patch inside it: composited over white
    from PIL import Image
    Image.fromarray(rgba, "RGBA").save(tmp_path / "wide.png")
    img = load_image(tmp_path / "wide.png", 20)
    assert img.shape == (1, 3, 20, 20) and torch.allclose(img, torch.ones_like(img), atol=1e-3)
    left = load_image(tmp_path / "wide.png", 20, crop=(0, 0, 20, 20))  # black columns come in with the crop box
    assert left[0, :, :, :5].max() < -0.9


def test_inversion_quality_on_known_latents_ranks_the_modes():
    """`gan3d bench --mode invert`'s measure: each mode beats the mean latent on novel views, PTI (which also tunes
    G) reconstructs better than W alone."""
    from gan3d.tools.inversion_quality import measure_inversion

    q = measure_inversion(load_config(SMOKE), steps=5, pti_steps=3)
    assert set(q["modes"]) == {"w", "wplus", "pti"} and q["resolution"] == 32
    assert all(m["novel_psnr"] > q["mean_latent_novel_psnr"] for m in q["modes"].values())
    assert q["modes"]["pti"]["psnr"] > q["modes"]["w"]["psnr"]
