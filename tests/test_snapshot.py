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
from gan3d.training.snapshot_pickle import read_snapshot
from conftest import ROOT, TINY
from test_parity import FIXTURES, TOL, _maxabs

pytestmark = pytest.mark.skipif(not (FIXTURES / "G_tiny.npz").exists(), reason=f"no seed parity fixtures at {FIXTURES}")
BUFFERS = ("w_avg", "mean_camera_pose", "noise_const", "resample_filter", "fourier_coefs")


def _fake_modules():
    """Stand-ins for the reference's `src.torch_utils.persistence` (whose reconstruct hook must never be called) and
    `src.dnnlib.util` (EasyDict: a dict with attribute access), registered while the test pickles a snapshot, so the
    pickle names them exactly as the reference's training loop does."""
    mods = {name: types.ModuleType(name) for name in ("src", "src.torch_utils", "src.torch_utils.persistence",
                                                        "src.dnnlib", "src.dnnlib.util")}

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("the loader called the persistence hook")

    _reconstruct_persistent_obj.__module__ = "src.torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mods["src.torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class EasyDict(dict):
        def __getattr__(self, name):
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name)

        def __setattr__(self, name, value):
            self[name] = value

    EasyDict.__module__, EasyDict.__qualname__ = "src.dnnlib.util", "EasyDict"
    mods["src.dnnlib.util"].EasyDict = EasyDict
    return mods


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


def experiment_config(meta):
    """The experiment config as the reference's train.py holds it: one tree whose model nodes refer to the dataset
    and patch nodes (`${dataset}`, `${training.patch}`), with string interpolations elsewhere that gan3d never reads."""
    g, d = dict(meta["G"]["cfg"]), dict(meta["D"]["cfg"])
    dataset, patch = g.pop("dataset"), g.pop("patch")
    d.pop("patch")
    return OmegaConf.create({
        "env": {"datasets_dir": "/data/datasets"},
        "dataset": {**dataset, "path_for_slurm_job": "${env.datasets_dir}/${dataset.name}.zip"},
        "training": {"patch": patch, "batch_size": 4},
        "model": {"generator": {**g, "dataset": "${dataset}", "patch": "${training.patch}"},
                  "discriminator": {**d, "patch": "${training.patch}"}},
        "experiment_dir": "${env.datasets_dir}/../experiments/tiny"})


def make_snapshot(path, marker, drop=(), tamper=None, edit_cfg=None, edit_snap=None, protocol=4):
    """A snapshot as the reference's training loop pickles one (training_loop.py:426-443): persistent G, D, G_ema and
    AugmentPipe whose init kwargs hold EasyDicts and whose cfg is a node of the experiment config, the two Adam
    optimizers (after a step, so they carry state), vis, stats and training_set_kwargs."""
    meta = json.loads((FIXTURES / "config.json").read_text())
    g = {k[6:]: v for k, v in np.load(FIXTURES / "G_tiny.npz").items() if k.startswith("param/")}
    d = {k[6:]: v for k, v in np.load(FIXTURES / "D_tiny.npz").items() if k.startswith("param/")}
    if tamper:
        tamper(g, d)
    mods = _fake_modules()
    sys.modules.update(mods)
    try:
        hook, EasyDict = mods["src.torch_utils.persistence"]._reconstruct_persistent_obj, mods["src.dnnlib.util"].EasyDict
        root = experiment_config(meta)
        if edit_cfg:
            edit_cfg(root)
        g_kwargs = {**meta["G"]["kwargs"], "cfg": root.model.generator,
                    "mapping_kwargs": EasyDict(meta["G"]["kwargs"]["mapping_kwargs"])}
        d_kwargs = {**meta["D"]["kwargs"], "cfg": root.model.discriminator,
                    **{k: EasyDict(meta["D"]["kwargs"][k]) for k in ("block_kwargs", "mapping_kwargs", "epilogue_kwargs")}}
        G = _tree(g, hook, marker, "Generator", g_kwargs, root.model.generator,
                  sequential=("synthesis.tri_plane_mlp.model",))
        D = _tree(d, hook, marker, "Discriminator", d_kwargs, root.model.discriminator)
        aug = Persistent(hook, "AugmentPipe", {"_parameters": {}, "_buffers": collections.OrderedDict(p=torch.tensor(0.25)),
                                              "_modules": {}, "_init_kwargs": EasyDict(xflip=0.0, rotate90=1.0)}, marker)
        opts = {}
        for name, params in (("G_opt", g), ("D_opt", d)):  # the live networks' optimizers, one step taken
            live = [torch.nn.Parameter(torch.as_tensor(v).clone()) for v in params.values() if np.ndim(v) > 0][:6]
            opts[name] = torch.optim.Adam(live, lr=0.002, betas=(0.0, 0.99), eps=1e-8)
            for p in live:
                p.grad = torch.ones_like(p)
            opts[name].step()
        vis = {"grid_size": (2, 2), "labels": np.zeros([4, 0], np.float32), "camera_angles": np.zeros([4, 3], np.float32),
               "grid_z": tuple(torch.randn(4, 64).split(2)), "grid_c": tuple(torch.zeros(4, 0).split(2))}
        stats = {"cur_nimg": 120_004, "cur_tick": 30, "batch_idx": 30_001, "best_metric_value": float("inf"),
                 "best_metric_tick": 0, "best_metric_nimg": 0}
        training_set_kwargs = dict(EasyDict(class_name="src.training.dataset.ImageFolderDataset", path="data/tiny.zip",
                                            use_labels=False, max_size=48, xflip=True, resolution=32, random_seed=0))
        snap = {"training_set_kwargs": training_set_kwargs, "G": G, "D": D, "G_ema": G, "augment_pipe": aug, **opts,
                "vis": vis, "stats": stats}
        for k in drop:
            snap.pop(k)
        if edit_snap:
            edit_snap(snap, hook, marker)
        with open(path, "wb") as f:
            pickle.dump(snap, f, protocol=protocol)
    finally:
        for name in mods:
            sys.modules.pop(name, None)
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
    assert ck.counters.kimg == pytest.approx(120.004)  # the snapshot's own stats.cur_nimg
    assert "model/D" in ck.state and "optim/G" not in ck.state
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


def test_an_imported_snapshot_renders_evaluates_and_fine_tunes(snapshot, tmp_path, synthetic_zip, one_node_ray):
    path, marker = snapshot
    res = cli("render", path, "--vis", "front_grid", "--seeds", "0-3", "--out", tmp_path / "grid")
    assert res.returncode == 0 and (tmp_path / "grid" / "front_grid.png").is_file(), res.stderr
    res = cli("eval", path, "--metrics", "swd", "--data", synthetic_zip, "--num-fakes", "32")
    assert res.returncode == 0 and "swd" in res.stdout, res.stderr
    assert json.loads(path.with_name(f"{path.stem}.eval.json").read_text())["metrics"]["swd"] > 0
    out = tmp_path / "imported"
    assert cli("import-checkpoint", path, out).returncode == 0
    # the imported config.yaml is a whole experiment: resume the reference run for one step from its kimg
    cfg = gan3d.load_config(out / "config.yaml", [*TINY, "training.batch=8", "training.kimg=120.012",
                                                 f"training.resume={path}", f"dataset.path={synthetic_zip}"])
    run = gan3d.train(cfg, out=str(tmp_path / "runs"), name="resumed")
    assert run.stop_reason == "done" and run.kimg == pytest.approx(120.012)  # one step from the snapshot's 120.004
    from gan3d.track.store import read_metrics
    assert list(read_metrics(run.run_dir)["kimg"]) == [pytest.approx(120.012)]
    assert not marker.exists()


@pytest.mark.parametrize("module", ["dnnlib", "dnnlib.util", "src.dnnlib.util"])
def test_easydicts_under_every_module_path_read_as_dicts(tmp_path, module):
    """StyleGAN2-ADA pickles dnnlib.util.EasyDict (dnnlib.EasyDict re-exports it); EpiGRAF src.dnnlib.util."""
    parts = module.split(".")
    mods = {".".join(parts[:i + 1]): types.ModuleType(".".join(parts[:i + 1])) for i in range(len(parts))}

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = module, "EasyDict"
    mods[module].EasyDict = EasyDict
    sys.modules.update(mods)
    try:
        data = pickle.dumps({"G_ema": None, "training_set_kwargs": EasyDict(path="x.zip", resolution=32)})
    finally:
        for name in mods:
            sys.modules.pop(name)
    (tmp_path / "s.pkl").write_bytes(data)
    kwargs = read_snapshot(tmp_path / "s.pkl")["training_set_kwargs"]
    assert type(kwargs) is dict and kwargs == {"path": "x.zip", "resolution": 32}


def test_the_report_says_the_optimizers_were_not_imported(snapshot):
    from gan3d.training.snapshot import convert_snapshot
    from gan3d.training.snapshot_pickle import OptimizerState
    path, marker = snapshot
    snap = read_snapshot(path)
    assert isinstance(snap["G_opt"], OptimizerState) and snap["G_opt"].class_name == "Adam"
    assert set(snap["G_opt"].state) >= {"state", "param_groups"}  # read as data
    report = convert_snapshot(path).report
    assert any("G_opt (Adam), D_opt (Adam) not imported" in line for line in report)
    assert not marker.exists()


@pytest.mark.parametrize("edit,key", [
    (lambda root: root.model.generator.tri_plane.__setattr__("res", "${oc.env:GAN3D_TEST_SECRET}"),
     "model.generator.tri_plane.res"),
    (lambda root: root.model.generator.__setattr__("num_ray_steps", "${model.generator.num_ray_steps}"),
     "model.generator.num_ray_steps"),
    (lambda root: root.dataset.camera.__setattr__("fov", "${no.such.key}"), "dataset.camera.fov"),
])
def test_config_interpolations_are_read_as_data_never_resolved(tmp_path, monkeypatch, edit, key):
    """A reference to another key is followed (the reference's `${dataset}`); a resolver, a loop or a missing key in
    a value gan3d reads is one line naming the key, the text never echoed and nothing looked up in the environment."""
    monkeypatch.setenv("GAN3D_TEST_SECRET", "s3cr3t-value")
    path = make_snapshot(tmp_path / "network-snapshot-000001.pkl", tmp_path / "EXECUTED", edit_cfg=edit)
    res = cli("import-checkpoint", path, tmp_path / "out")
    assert res.returncode == 2 and f"config key '{key}'" in res.stderr, res.stderr
    assert "s3cr3t" not in res.stderr and "${" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ snapshots built to hurt

def _bounded_cli(*args, limit_gb=3, timeout=120):
    """The CLI in a process with an address-space ceiling: a loader that blows up hits it instead of the machine."""
    import resource

    def ceiling():
        resource.setrlimit(resource.RLIMIT_AS, (limit_gb << 30, limit_gb << 30))
    return subprocess.run([sys.executable, "-m", "gan3d.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=ceiling)


def _shared_dicts(levels):
    d = {"leaf": 1.0}
    for _ in range(levels):
        d = {"a": d, "b": d}  # each level references the one below twice: 2^levels paths, `levels` objects
    return d


def _deep_dict_ops(depth: int) -> bytes:
    """Pickle opcodes (protocol 3) leaving one dict nested `depth` deep on the stack: built without recursion."""
    key = b"X" + (1).to_bytes(4, "little") + b"a"  # BINUNICODE 'a'
    return (b"}" + key) * depth + b"}" + b"s" * depth  # EMPTY_DICT, key, ..., innermost dict, SETITEM x depth


def _with_deep_kwargs(path, marker, depth):
    """A real snapshot whose G init kwargs hold a dict nested `depth` deep (spliced in as opcodes)."""
    def put(snap, hook, marker):
        snap["G"].meta["state"]["_init_kwargs"]["mapping_kwargs"]["deep"] = "DEEP_PLACEHOLDER"
    make_snapshot(path, marker, edit_snap=put, protocol=3)  # no frames: opcodes can be spliced in
    data = path.read_bytes()
    placeholder = b"X" + len(b"DEEP_PLACEHOLDER").to_bytes(4, "little") + b"DEEP_PLACEHOLDER"
    assert data.count(placeholder) == 1
    path.write_bytes(data.replace(placeholder, _deep_dict_ops(depth)))
    return path


def _module_chain(hook, marker, length):
    node = Persistent(hook, "Leaf", {"_parameters": {}, "_buffers": {}, "_modules": {}}, marker)
    for _ in range(length):
        node = Persistent(hook, "Link", {"_parameters": {}, "_buffers": {}, "_modules": {"next": node}}, marker)
    return node


def _dump_deep(fn, *args):
    """Pickling a 5000-deep chain recurses: do it on a thread with a large stack and a raised recursion limit."""
    import threading
    old_limit, old_stack = sys.getrecursionlimit(), threading.stack_size()
    sys.setrecursionlimit(200_000)
    threading.stack_size(512 << 20)
    box = {}
    try:
        t = threading.Thread(target=lambda: box.update(out=fn(*args)))
        t.start()
        t.join()
    finally:
        sys.setrecursionlimit(old_limit)
        threading.stack_size(old_stack)
    return box["out"]


class _Call:
    """Pickles as func(*args): how the crafted files put a call the loader allows where a value belongs."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _view_past_its_storage():
    import warnings
    with warnings.catch_warnings():  # a TypedStorage, as torch.save pickles a tensor's storage
        warnings.simplefilter("ignore")
        storage = torch.zeros(4).storage()
    return _Call(torch._utils._rebuild_tensor_v2, (storage, 0, (1 << 20,), (1,), False, collections.OrderedDict()))


def _storage_hiding_a_pickle(marker):
    import io
    buf = io.BytesIO()
    torch.save(_Call(open, (str(marker), "w")), buf)
    return _Call(torch.storage._load_from_bytes, (buf.getvalue(),))


@pytest.mark.parametrize("case", ["shared dicts", "shared submodules", "view past storage", "object array",
                                  "deep dict", "deep module chain", "unknown resolver", "storage hiding a pickle"])
def test_crafted_snapshots_are_one_line_within_bounded_memory_and_run_nothing(tmp_path, case):
    marker = tmp_path / "EXECUTED"
    path = tmp_path / "network-snapshot-000001.pkl"
    edits = {
        "shared dicts": lambda snap, hook, m: snap["G"].meta["state"]["_init_kwargs"]["mapping_kwargs"].__setitem__(
            "x", _shared_dicts(40)),
        "shared submodules": lambda snap, hook, m: snap["D"].meta["state"]["_modules"].__setitem__(
            "extra", _shared_modules(hook, m, 40)),
        "view past storage": lambda snap, hook, m: snap["G"].meta["state"]["_buffers"].__setitem__(
            "w_avg", _view_past_its_storage()),
        "object array": lambda snap, hook, m: snap["vis"].__setitem__("labels", np.array([1, "a"], dtype=object)),
        "unknown resolver": None,
        "storage hiding a pickle": lambda snap, hook, m: snap["G"].meta["state"]["_buffers"].__setitem__(
            "w_avg", _storage_hiding_a_pickle(marker)),
    }
    expected = {"shared dicts": None, "shared submodules": "does not fit the gan3d D",
                "view past storage": "reaches past the end of its storage", "object array": "numpy array of Python objects",
                "deep dict": "nested deeper than", "deep module chain": "nested deeper than",
                "unknown resolver": "config key 'model.generator.tri_plane.feat_dim' holds an interpolation",
                "storage hiding a pickle": "a tensor storage in it holds a pickle of objects"}[case]
    if case == "deep dict":
        _with_deep_kwargs(path, marker, 100_000)
    elif case == "deep module chain":
        _dump_deep(make_snapshot, path, marker, (), None, None,
                   lambda snap, hook, m: snap["G"].meta["state"]["_modules"].__setitem__("chain", _module_chain(hook, m, 5000)))
    elif case == "unknown resolver":
        make_snapshot(path, marker, edit_cfg=lambda root: root.model.generator.tri_plane.__setattr__(
            "feat_dim", "${made_up_resolver:1}"))
    else:
        make_snapshot(path, marker, edit_snap=edits[case])
    res = _bounded_cli("import-checkpoint", path, tmp_path / "out")
    if expected is None:  # read once per object: it imports, quickly
        assert res.returncode == 0, res.stderr
    else:
        assert res.returncode == 2 and expected in res.stderr and path.name in res.stderr, res.stderr[-2000:]
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
        assert not (tmp_path / "out").exists()
    assert not marker.exists()


def _shared_modules(hook, marker, levels):
    node = Persistent(hook, "Leaf", {"_parameters": {"w": torch.nn.Parameter(torch.zeros(2))}, "_buffers": {},
                                     "_modules": {}}, marker)
    for _ in range(levels):
        node = Persistent(hook, "Pair", {"_parameters": {}, "_buffers": {}, "_modules": {"a": node, "b": node}}, marker)
    return node


def test_a_gan3d_checkpoint_carrying_a_pickled_call_is_one_line_and_runs_nothing(tmp_path):
    from gan3d.storage import file_sha256
    from gan3d.training.checkpoint import META, STATE
    marker = tmp_path / "EXECUTED"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save({"model/G": _Call(open, (str(marker), "w"))}, ckpt / STATE)
    (ckpt / "config.yaml").write_text("{}\n")
    (ckpt / META).write_text(json.dumps({"format": "gan3d-checkpoint-v1", "state_sha256": file_sha256(ckpt / STATE),
                                         "cur_nimg": 0, "step": 0, "tick": 0}))
    res = _bounded_cli("render", ckpt, "--vis", "front_grid", "--out", tmp_path / "r")
    assert res.returncode == 2 and "state.pt: holds 'io.open'" in res.stderr, res.stderr[-2000:]
    assert len(res.stderr.strip().splitlines()) == 1 and not marker.exists()
