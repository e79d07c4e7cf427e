"""gan3d's G and D against the reference EpiGRAF's own tiny networks (shared/seed_parity, read its README).

The fixtures hold the reference's state dicts, inputs and outputs; gan3d loads the tensors through
gan3d.nn.reference_names and must reproduce every output within 1e-4 (max abs).
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gan3d.config import load_config
from gan3d.nn import build_discriminator, build_generator, count_parameters
from gan3d.nn.generator import Patch
from gan3d.nn.reference_names import load_reference_state
from gan3d.render import cameras, rays, triplane, volume

FIXTURES = Path(os.environ.get("GAN3D_SEED_PARITY", Path(__file__).resolve().parents[2] / "shared" / "seed_parity"))
pytestmark = pytest.mark.skipif(not (FIXTURES / "G_tiny.npz").exists(),
                                reason=f"no seed parity fixtures at {FIXTURES} (set GAN3D_SEED_PARITY)")
TOL = 1e-4
DEVICE = torch.device(os.environ.get("GAN3D_TEST_DEVICE", "cpu"))  # the GPU check script sets cuda
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 on GPUs too

# the reference's tiny configuration (seed_parity/config.json) in gan3d's keys
TINY = ["dataset.resolution=32", "dataset.camera.fov=12", "dataset.camera.ray_start=0.88", "dataset.camera.ray_end=1.12",
        "dataset.camera.radius=1", "model.generator.z_dim=64", "model.generator.w_dim=64",
        "model.generator.triplane_resolution=32", "model.generator.triplane_channels=8",
        "model.generator.channel_base=1024", "model.generator.channel_max=64", "model.generator.mlp_hidden=64",
        "model.generator.render.num_coarse=8", "model.generator.render.num_fine=8",
        "model.generator.render.cube_scale=0.2", "model.discriminator.channel_base=1024",
        "model.discriminator.channel_max=64", "training.patch.resolution=16"]


def _load(name):
    data = np.load(FIXTURES / name)
    params = {k[len("param/"):]: torch.from_numpy(data[k]) for k in data.files if k.startswith("param/")}
    arrays = {k: torch.from_numpy(data[k]).to(DEVICE) for k in data.files if not k.startswith("param/")}
    return params, arrays


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    cfg = load_config(None, TINY)
    G, D = build_generator(cfg), build_discriminator(cfg)
    g_params, g = _load("G_tiny.npz")
    d_params, d = _load("D_tiny.npz")
    load_reference_state(G, g_params, "G", "G_tiny.npz")
    load_reference_state(D, d_params, "D", "D_tiny.npz")
    return cfg, G.to(DEVICE), D.to(DEVICE), g, d


def _maxabs(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def test_parameter_counts_match_the_reference():
    meta = json.loads((FIXTURES / "config.json").read_text())
    cfg = load_config(None, TINY)
    assert count_parameters(build_generator(cfg)) == meta["G"]["derived"]["num_params"]
    # the reference builds a fromrgb in every D block but uses only the first block's (README)
    unused = sum(np.load(FIXTURES / "D_tiny.npz")[f"param/b{r}.fromrgb.{p}"].size for r in (16, 8) for p in ("weight", "bias"))
    assert count_parameters(build_discriminator(cfg)) == meta["D"]["derived"]["num_params"] - unused


def test_mapping_and_truncation(tiny):
    _, G, _, g, _ = tiny
    G.eval()
    with torch.no_grad():
        assert _maxabs(G.mapping(g["input/z"], None), g["output/ws_psi1"]) < TOL
        assert _maxabs(G.mapping(g["input/z"], None, truncation_psi=0.5), g["output/ws_psi05"]) < TOL


def test_triplanes(tiny):
    _, G, _, g, _ = tiny
    G.eval()
    with torch.no_grad():
        planes = G.synthesis(g["output/ws_psi1"], noise_mode="const")  # [B, 3, C, T, T]
    assert _maxabs(planes.flatten(1, 2), g["output/planes"]) < TOL


def _patch(g):
    return Patch(g["input/patch_scales"], g["input/patch_offsets"])


@pytest.mark.parametrize("psi,key", [(1.0, "output/patch_images"), (0.5, "output/patch_images_psi05")])
def test_patch_renders_in_training_mode(tiny, psi, key):
    _, G, _, g, _ = tiny
    G.train()
    with torch.no_grad():
        ws = G.mapping(g["input/z"], None, truncation_psi=psi)
        out = G.render_planes(G.synthesis(ws, "const"), ws, g["input/camera_angles"].clone(), resolution=16,
                              patch=_patch(g), stochastic=False)
    G.eval()
    assert _maxabs(out["image"], g[key]) < TOL
    if psi == 1.0:
        assert _maxabs(out["depth"], g["output/patch_depth"]) < TOL


def test_importance_samples(tiny):
    """The fine depths of the patch render, rebuilt from the pure render functions."""
    cfg, G, _, g, _ = tiny
    cam = cfg.dataset.camera
    with torch.no_grad():
        planes = G.synthesis(g["output/ws_psi1"], "const")
        angles = g["input/camera_angles"] * torch.tensor([1.0, 1.0, 0.0], device=DEVICE)
        dirs = rays.ray_directions(16, cam.fov, g["input/patch_scales"], g["input/patch_offsets"], batch=4, device=DEVICE)
        origins, dirs = rays.world_rays(cameras.cam2world_matrix(angles, cam.radius), dirs)
        z = rays.stratified_depths((4, 256), 8, cam.ray_start, cam.ray_end, perturb=False, device=DEVICE)
        pts = origins[:, :, None] + z[..., None] * dirs[:, :, None]
        rgb, sigma = G.decoder(triplane.sample_triplane(planes, pts.reshape(4, -1, 3) / 0.2))
        weights = volume.integrate(rgb.reshape(4, 256, 8, 3), sigma.reshape(4, 256, 8, 1), z)["weights"]
        fine = rays.importance_depths(z, weights, 8, deterministic=True)
    assert _maxabs(fine, g["output/debug_patch_fine_z"]) < TOL


def test_full_renders_in_eval_mode(tiny):
    _, G, _, g, _ = tiny
    G.eval()
    with torch.no_grad():
        ws = G.mapping(g["input/z"][:2], None)
        out = G.render_planes(G.synthesis(ws, "const"), ws, g["input/camera_angles"][:2].clone())
    assert _maxabs(out["image"], g["output/full_images"]) < TOL
    assert _maxabs(out["depth"], g["output/full_depth"]) < TOL


@pytest.mark.parametrize("s", ["A", "B"])
def test_discriminator_logits_and_codes(tiny, s):
    _, _, D, _, d = tiny
    params = torch.cat([d[f"input/patch_scales_{s}"][:, :1], d[f"input/patch_offsets_{s}"]], dim=1)
    with torch.no_grad():
        code = D.patch_encoder(params)
        assert _maxabs(code, d[f"output/debug_patch_embedding_{s}"]) < TOL
        assert _maxabs(D.hyper_mapping(code), d[f"output/debug_hyper_code_{s}"]) < TOL
        assert _maxabs(D.head_mapping(code), d[f"output/debug_cmap_{s}"]) < TOL
        logits = D(d["input/images"], params)
    assert _maxabs(logits[:, 0], d[f"output/logits_{s}"]) < TOL


def test_a_wrong_state_is_refused_with_every_problem_named(tiny):
    from gan3d.errors import CheckpointError
    _, G, _, _, _ = tiny
    params, _ = _load("G_tiny.npz")
    params["mapping.fc0.weight"] = params["mapping.fc0.weight"][:, :10]
    params["mapping.extra.weight"] = torch.zeros(3)
    del params["mapping.fc1.bias"]
    with pytest.raises(CheckpointError) as e:
        load_reference_state(G, params, "G", "G_tiny.npz")
    msg = str(e.value)
    assert "G_tiny.npz" in msg and "mapping.layers.0.weight' has shape (64, 10)" in msg
    assert "unexpected tensor 'mapping.extra.weight'" in msg and "missing tensor for 'mapping.layers.1.bias'" in msg
