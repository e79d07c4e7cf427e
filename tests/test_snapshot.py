"""Reference snapshots (`network-snapshot-*.pkl`, StyleGAN2-ADA persistent classes) opened without executing
anything, converted into gan3d checkpoints that reproduce the reference's outputs, and the bad files refused.

The snapshots are built here in the persistence format: reconstruct calls whose payload carries module source
that would write a marker file if it ever ran, and states holding shared/seed_parity's tensors.
"""
import collections
import json
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import gan3d
from gan3d.errors import CheckpointError
from gan3d.training.checkpoint import read_checkpoint
from gan3d.training.snapshot import read_snapshot
from conftest import ROOT, TINY
from test_parity import FIXTURES, TOL, _maxabs

pytestmark = pytest.mark.skipif(not (FIXTURES / "G_tiny.npz").exists(), reason=f"no seed parity fixtures at {FIXTURES}")
BUFFERS = ("w_avg", "mean_camera_pose", "noise_const", "resample_filter", "fourier_coefs")


def _fake_persistence():
    """A stand-in `torch_utils.persistence` whose reconstruct hook must never be called."""
    mod = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("the loader called the persistence hook")

    _reconstruct_persistent_obj.__module__ = mod.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    return mod


class Persistent:
    """Pickles as the reference's persistent classes do: (reconstruct hook, (meta,))."""

    def __init__(self, hook, class_name, state, marker):
        self.hook, self.meta = hook, {"type": "class", "version": 4, "class_name": class_name, "state": state,
                                      "module_src": f"open({str(marker)!r}, 'w').write('executed')\n"}

    def __reduce__(self):
        return self.hook, (self.meta,)


def _tree(params: dict, hook, marker, name: str, init_kwargs=None, cfg=None, sequential=("tri_plane_mlp.model",)):
    """Nested persistent objects from a flat reference state dict (torch.nn.Sequential where the reference has one)."""
    children = collections.defaultdict(dict)
    own_p, own_b = collections.OrderedDict(), collections.OrderedDict()
    for key, value in params.items():
        head, _, rest = key.partition(".")
        if rest:
            children[head][rest] = value
        elif head in BUFFERS:
            own_b[head] = torch.as_tensor(value).clone()
        else:
            own_p[head] = torch.nn.Parameter(torch.as_tensor(value).clone(), requires_grad=False)

    def child(path, sub):
        if path in sequential:
            seq = torch.nn.Sequential()
            for k, v in sub.items():
                seq._modules.setdefault(k.split(".")[0], None)
            for k in list(seq._modules):
                seq._modules[k] = _tree({r.partition(".")[2]: v for r, v in sub.items() if r.split(".")[0] == k},
                                        hook, marker, "FullyConnectedLayer")
            return seq
        return _tree(sub, hook, marker, "Block", sequential=tuple(s.partition(".")[2] for s in sequential
                                                                  if s.startswith(path.split(".")[-1] + ".")))

    modules = {k: child(k, v) for k, v in children.items()}
    state = {"training": False, "_parameters": own_p, "_buffers": own_b, "_non_persistent_buffers_set": set(),
             "_modules": modules, "_init_args": (), "_init_kwargs": init_kwargs or {}}
    if cfg is not None:
        state["cfg"] = cfg
    return Persistent(hook, name, state, marker)


def make_snapshot(path, marker, drop=(), tamper=None):
    meta = json.loads((FIXTURES / "config.json").read_text())
    g = {k[6:]: v for k, v in np.load(FIXTURES / "G_tiny.npz").items() if k.startswith("param/")}
    d = {k[6:]: v for k, v in np.load(FIXTURES / "D_tiny.npz").items() if k.startswith("param/")}
    if tamper:
        tamper(g, d)
    hook_mod = _fake_persistence()
    sys.modules["torch_utils"] = types.ModuleType("torch_utils")
    sys.modules["torch_utils.persistence"] = hook_mod
    try:
        hook = hook_mod._reconstruct_persistent_obj
        gcfg, dcfg = OmegaConf.create(meta["G"]["cfg"]), OmegaConf.create(meta["D"]["cfg"])
        G = _tree(g, hook, marker, "Generator", meta["G"]["kwargs"], gcfg, sequential=("synthesis.tri_plane_mlp.model",))
        D = _tree(d, hook, marker, "Discriminator", meta["D"]["kwargs"], dcfg)
        aug = Persistent(hook, "AugmentPipe", {"_parameters": {}, "_buffers": collections.OrderedDict(p=torch.tensor(0.25)),
                                              "_modules": {}, "_init_kwargs": {"xflip": 1}}, marker)
        snap = {"training_set_kwargs": {"path": "data/tiny.zip", "resolution": 32}, "G": G, "D": D, "G_ema": G,
                "augment_pipe": aug}
        for k in drop:
            snap.pop(k)
        with open(path, "wb") as f:
            pickle.dump(snap, f)
    finally:
        sys.modules.pop("torch_utils.persistence")
        sys.modules.pop("torch_utils")
    return path


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    root = tmp_path_factory.mktemp("snap")
    marker = root / "EXECUTED"
    return make_snapshot(root / "network-snapshot-000120.pkl", marker), marker


def test_snapshot_opens_without_running_its_code_and_matches_the_reference(snapshot):
    path, marker = snapshot
    G = gan3d.load_generator(path)  # converted on the fly, G_ema
    assert not marker.exists()
    g = {k: torch.from_numpy(v) for k, v in np.load(FIXTURES / "G_tiny.npz").items() if not k.startswith("param/")}
    with torch.no_grad():
        assert _maxabs(G.mapping(g["input/z"], None), g["output/ws_psi1"]) < TOL
        out = G.render_planes(G.synthesis(g["output/ws_psi1"][:2], "const"), g["output/ws_psi1"][:2],
                              g["input/camera_angles"][:2].clone())
        assert _maxabs(out["image"], g["output/full_images"]) < TOL
    ck = read_checkpoint(path)
    assert ck.counters.kimg == 120 and "model/D" in ck.state and "optim/G" not in ck.state
    assert float(ck.state["model/augment"]["p"]) == 0.25
    from gan3d.nn import build_discriminator
    D = build_discriminator(ck.cfg)
    D.load_state_dict(ck.state["model/D"])
    d = {k: torch.from_numpy(v) for k, v in np.load(FIXTURES / "D_tiny.npz").items() if not k.startswith("param/")}
    with torch.no_grad():
        logits = D(d["input/images"], torch.cat([d["input/patch_scales_A"][:, :1], d["input/patch_offsets_A"]], 1))
    assert _maxabs(logits[:, 0], d["output/logits_A"]) < TOL
    assert ck.cfg.dataset.resolution == 32 and ck.cfg.training.patch.resolution == 16
    assert ck.cfg.model.generator.triplane_channels == 8 and ck.cfg.model.generator.render.num_coarse == 8
    assert not marker.exists()


def cli(*args):
    return subprocess.run([sys.executable, "-m", "gan3d.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_import_checkpoint_writes_a_gan3d_checkpoint(snapshot, tmp_path):
    path, marker = snapshot
    res = cli("import-checkpoint", path, tmp_path / "imported", "--preset", ROOT / "experiments" / "smoke.yaml")
    assert res.returncode == 0, res.stderr
    meta = json.loads((tmp_path / "imported" / "meta.json").read_text())
    assert meta["imported_from"]["sha256"] and meta["imported_from"]["file"].endswith("network-snapshot-000120.pkl")
    assert any("dropped" in line for line in meta["imported_from"]["report"])
    ck = read_checkpoint(tmp_path / "imported")
    assert ck.cfg.training.batch == 8  # from the preset: a snapshot does not record it
    assert not marker.exists()


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_pickles_that_would_run_code_are_refused(tmp_path, payload):
    marker = tmp_path / "EXECUTED"
    call = {"os.system": (os.system, (f"touch {marker}",)), "builtins.eval": (eval, (f"open('{marker}', 'w')",)),
            "subprocess.Popen": (subprocess.Popen, (["touch", str(marker)],))}[payload]

    class Evil:
        def __reduce__(self):
            return call

    bad = tmp_path / "network-snapshot-000001.pkl"
    bad.write_bytes(pickle.dumps({"G_ema": Evil()}))
    res = cli("import-checkpoint", bad, tmp_path / "out")
    name = {"os.system": "system", "builtins.eval": "builtins.eval", "subprocess.Popen": "subprocess.Popen"}[payload]
    assert res.returncode == 2 and "refuses to load" in res.stderr and name in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_truncated_missing_and_misshaped_snapshots_each_give_one_line(snapshot, tmp_path):
    path, marker = snapshot
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(path.read_bytes()[:5000])
    no_ema = make_snapshot(tmp_path / "no_ema.pkl", marker, drop=("G_ema",))

    def wrong(g, d):
        g["mapping.fc0.weight"] = g["mapping.fc0.weight"][:, :32]

    misshaped = make_snapshot(tmp_path / "misshaped.pkl", marker, tamper=wrong)
    for f, expected in ((truncated, "not a readable snapshot"), (no_ema, "no G_ema in this snapshot"),
                        (misshaped, "mapping.layers.0.weight' has shape (64, 32)")):
        res = cli("import-checkpoint", f, tmp_path / "out")
        assert res.returncode == 2 and expected in res.stderr and f.name in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
        assert not (tmp_path / "out").exists()
    assert "G_ema" not in read_snapshot(no_ema)
    with pytest.raises(CheckpointError, match="no G_ema"):
        gan3d.load_generator(no_ema)
    assert not marker.exists()


def test_plain_state_dict_in_the_reference_naming(tmp_path):
    g = {k[6:]: torch.from_numpy(v) for k, v in np.load(FIXTURES / "G_tiny.npz").items() if k.startswith("param/")}
    torch.save({"G_ema": g}, tmp_path / "g.pt")
    exp = tmp_path / "tiny.yaml"
    from test_parity import TINY as PARITY
    OmegaConf.save(OmegaConf.from_dotlist(PARITY), exp)
    res = cli("import-checkpoint", tmp_path / "g.pt", tmp_path / "out")
    assert res.returncode == 2 and "--preset" in res.stderr
    res = cli("import-checkpoint", tmp_path / "g.pt", tmp_path / "out", "--preset", exp)
    assert res.returncode == 0, res.stderr
    G = gan3d.load_generator(tmp_path / "out")
    z = torch.from_numpy(np.load(FIXTURES / "G_tiny.npz")["input/z"])
    assert _maxabs(G.mapping(z, None), torch.from_numpy(np.load(FIXTURES / "G_tiny.npz")["output/ws_psi1"])) < TOL


def test_an_imported_snapshot_renders_evaluates_and_fine_tunes(snapshot, tmp_path, synthetic_zip, ray_session):
    path, marker = snapshot
    res = cli("render", path, "--vis", "front_grid", "--seeds", "0-3", "--out", tmp_path / "grid")
    assert res.returncode == 0 and (tmp_path / "grid" / "front_grid.png").is_file(), res.stderr
    res = cli("eval", path, "--metrics", "swd", "--data", synthetic_zip, "--num-fakes", "32")
    assert res.returncode == 0 and "swd" in res.stdout, res.stderr
    assert json.loads(path.with_name(f"{path.stem}.eval.json").read_text())["metrics"]["swd"] > 0
    out = tmp_path / "imported"
    assert cli("import-checkpoint", path, out).returncode == 0
    # the imported config.yaml is a whole experiment: resume the reference run for one tick from its kimg 120
    cfg = gan3d.load_config(out / "config.yaml", [*TINY, "training.batch=8", "training.kimg=120.016",
                                                 f"training.resume={path}", f"dataset.path={synthetic_zip}"])
    run = gan3d.train(cfg, out=str(tmp_path / "runs"), name="resumed")
    assert run.stop_reason == "done" and run.kimg == pytest.approx(120.016)
    from gan3d.track.store import read_metrics
    assert list(read_metrics(run.run_dir)["kimg"]) == [pytest.approx(120.016)]
    assert not marker.exists()
