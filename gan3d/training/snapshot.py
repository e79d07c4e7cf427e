"""The reference implementation's training snapshots (`network-snapshot-<kimg>.pkl`), opened without running
anything they carry, and converted into gan3d checkpoints.

A snapshot is the pickled dict its training loop writes (training_loop.py:426-443): G, D, G_ema, augment_pipe,
the two Adam optimizers G_opt / D_opt, vis, stats and training_set_kwargs. Its networks are StyleGAN2-ADA
"persistent classes": each pickles the source code of its module and a reconstruct call that would execute that
source; their init kwargs are dnnlib EasyDicts and their configs OmegaConf nodes. Here a restricted unpickler
resolves only an allow-list of globals: torch's tensor/storage rebuild functions (storages are read with
torch.load(weights_only=True)), plain containers, numpy scalars and dtypes, OmegaConf's config containers,
EasyDict (read as a plain dict, under every module path the reference's code pickles it from), torch.optim
optimizers (read as data; their state is not imported, which the report says), and the persistence reconstruct
hook, which is intercepted: it keeps the pickled state (parameters, buffers, init kwargs, submodules) as data and
never compiles the source. torch.nn container modules are kept as data too. Any other global is refused, naming it
and the file. Configs are read as data: a reference to another key of the same config (`${dataset}`) is followed,
any other interpolation is an error naming its key.

Work is bounded by the file, whatever it holds: every tensor view is checked against its storage (a view past the
end would make torch grow the storage with uninitialised memory), numpy arrays of Python objects are refused, the
snapshot's trees are walked once per object (shared references count once, so a file of shared dicts cannot
expand exponentially), to a limited depth, and within a budget of objects proportional to the file's size.
"""
from __future__ import annotations

import collections
import io
import math
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from gan3d import config as config_mod
from gan3d.config import ExperimentConfig
from gan3d.errors import CheckpointError, first_line

PERSISTENCE_MODULES = ("torch_utils.persistence", "src.torch_utils.persistence")
MAX_DEPTH = 64  # nesting of modules / config nodes a snapshot may have (the reference's: about 8)
OBJECTS_PER_KB = 32  # objects walked per KiB of file, plus a floor: far more than any real snapshot needs
EASYDICT_MODULES = ("dnnlib", "dnnlib.util", "src.dnnlib", "src.dnnlib.util")  # StyleGAN2-ADA's and EpiGRAF's
OPTIMIZERS = ("Adam", "AdamW", "SGD", "RMSprop")


class PersistentState:
    """What the persistence hook would have rebuilt: the class name, the pickled __dict__; the source is
    kept only as its length (it is never compiled)."""

    def __init__(self, meta: Any):
        if not isinstance(meta, dict) or "state" not in meta:
            raise CheckpointError("a persistent object without the expected metadata")
        self.class_name = str(meta.get("class_name", "?"))
        self.state = meta["state"] if isinstance(meta["state"], dict) else {}
        self.source_chars = len(meta.get("module_src") or "")


class OptimizerState:
    """A pickled torch.optim optimizer kept as its pickled state (never an optimizer); `class_name` is set on the
    per-class subclass the unpickler hands out."""
    class_name = "?"

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}


def _optimizer_state_class(name: str) -> type:
    return type(f"{name}State", (OptimizerState,), {"class_name": name})


class ModuleState:
    """A plain torch.nn module (Sequential, Embedding, ...) kept as its pickled __dict__, without its class."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}


class Refused(Exception):
    """Raised while unpickling; read_snapshot names the file."""


def _load_storage(data: bytes):
    """torch.storage._load_from_bytes, but tensors-only: the blob is a torch.save of one storage."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise Refused("a tensor storage in it holds a pickle of objects, not tensors") from None


def _elements(storage) -> int:
    if isinstance(storage, torch.UntypedStorage):
        return storage.nbytes()
    with warnings.catch_warnings():  # torch.load's own storages are TypedStorages, whose accessors warn
        warnings.simplefilter("ignore")
        return storage.size()


def _rebuild_tensor(storage, offset, size, stride, *args):
    """torch._utils._rebuild_tensor_v2 for views that lie inside their storage (else torch would grow it)."""
    size, stride = tuple(size), tuple(stride)
    if (not isinstance(offset, int) or offset < 0 or len(size) != len(stride) or any(s < 0 for s in size)
            or any(s < 0 for s in stride)):
        raise Refused(f"a tensor view with offset {offset}, size {size}, stride {stride} is malformed")
    if 0 not in size and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= _elements(storage):
        raise Refused(f"a tensor view (offset {offset}, size {size}, stride {stride}) reaches past the end of its "
                      f"storage of {_elements(storage)} elements")
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, *args)


def _dtype(obj, align=False, copy=False):
    """numpy.dtype, but never one holding Python objects (their items would be unpickled objects)."""
    import numpy as np

    d = np.dtype(obj, align, copy)
    if d.hasobject:
        raise Refused(f"a numpy array of Python objects (dtype {d})")
    return d


def _allowed() -> dict[tuple[str, str], Any]:
    import numpy as np
    from omegaconf import base, dictconfig, listconfig, nodes

    allow: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): collections.defaultdict,
        ("builtins", "dict"): dict, ("builtins", "list"): list, ("builtins", "set"): set, ("builtins", "tuple"): tuple,
        ("builtins", "frozenset"): frozenset, ("builtins", "slice"): slice, ("builtins", "object"): object,
        ("builtins", "int"): int, ("builtins", "float"): float, ("builtins", "str"): str, ("builtins", "bool"): bool,
        ("builtins", "bytes"): bytes, ("builtins", "complex"): complex,
        ("typing", "Any"): Any,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("torch", "Size"): torch.Size,
        ("numpy", "dtype"): _dtype,
        ("omegaconf.dictconfig", "DictConfig"): dictconfig.DictConfig,
        ("omegaconf.listconfig", "ListConfig"): listconfig.ListConfig,
        ("omegaconf.base", "ContainerMetadata"): base.ContainerMetadata,
        ("omegaconf.base", "Metadata"): base.Metadata,
    }
    for name in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode"):
        allow[("omegaconf.nodes", name)] = getattr(nodes, name)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allow[(mod, "scalar")] = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
        allow[(mod, "_reconstruct")] = (np._core.multiarray._reconstruct if hasattr(np, "_core")
                                        else np.core.multiarray._reconstruct)
    allow[("numpy", "ndarray")] = np.ndarray
    for dtype in ("float32", "float64", "int64", "int32", "bool_", "float16"):
        allow[("numpy", dtype)] = getattr(np, dtype)
    for mod in PERSISTENCE_MODULES:
        allow[(mod, "_reconstruct_persistent_obj")] = PersistentState
    for mod in EASYDICT_MODULES:  # a dict subclass: rebuilt as a plain dict, its items set by the pickle
        allow[(mod, "EasyDict")] = dict
    for name in OPTIMIZERS:
        state = _optimizer_state_class(name)
        allow[(f"torch.optim.{name.lower()}", name)] = allow[("torch.optim", name)] = state
    return allow


_TORCH_MODULE = re.compile(r"torch\.nn\.modules\.\w+")


class SafeUnpickler(pickle.Unpickler):
    """Resolves only the allow-list; torch.nn modules become ModuleState; everything else is refused."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source, self.allow = source, _allowed()

    def find_class(self, module: str, name: str):
        if (module, name) in self.allow:
            return self.allow[(module, name)]
        if _TORCH_MODULE.fullmatch(module) and name[:1].isupper():
            return ModuleState
        raise CheckpointError(f"{self.source}: refuses to load '{module}.{name}' (not a tensor, container or "
                              f"network state; nothing from this file was executed)")

    def persistent_load(self, pid):
        raise CheckpointError(f"{self.source}: unexpected persistent id {str(pid)[:60]} (not a reference snapshot)")


def read_snapshot(path: str | Path) -> dict:
    """The snapshot's top-level dict, networks as PersistentState / ModuleState trees. Nothing is executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: snapshot not found")
    with open(path, "rb") as f:
        try:
            data = SafeUnpickler(f, str(path)).load()
        except CheckpointError:
            raise
        except Refused as e:
            raise CheckpointError(f"{path}: refused: {e} (nothing from this file was executed)") from None
        except Exception as e:  # truncated or not a pickle at all
            raise CheckpointError(f"{path}: not a readable snapshot ({type(e).__name__}: {first_line(e, 120)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict of networks (G, D, G_ema, ...), got {type(data).__name__}")
    return data


class Walk:
    """The budget of one snapshot's traversal: objects visited (shared ones once) and depth."""

    def __init__(self, source: str, file_bytes: int):
        self.source, self.left = source, max(100_000, file_bytes // 1024 * OBJECTS_PER_KB)
        self._refs: dict[str, int] = {}

    def references(self, key: str) -> int:
        """How often the reference at `key` was followed (a loop keeps coming back to it)."""
        self._refs[key] = self._refs.get(key, 0) + 1
        return self._refs[key]

    def step(self, depth: int) -> None:
        self.left -= 1
        if self.left < 0:
            raise CheckpointError(f"{self.source}: holds more objects than a snapshot of its size can "
                                  f"(nothing from this file was executed)")
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{self.source}: nested deeper than {MAX_DEPTH} levels; a snapshot's networks and "
                                  f"configs are not (nothing from this file was executed)")


def _state(node) -> dict:
    return node.state if isinstance(node, (PersistentState, ModuleState)) else {}


def flatten(node, walk: Walk, prefix: str = "", depth: int = 0, seen: Optional[set] = None) -> dict[str, torch.Tensor]:
    """A module tree's state_dict: parameters and persistent buffers under dotted names. A module reached twice
    (shared) is listed once, under its first name."""
    seen = set() if seen is None else seen
    walk.step(depth)
    if id(node) in seen:
        return {}
    seen.add(id(node))
    s = _state(node)
    out: dict[str, torch.Tensor] = {}
    skip = set(s.get("_non_persistent_buffers_set") or ())
    for k, v in (s.get("_parameters") or {}).items():
        if v is not None:
            out[prefix + k] = torch.as_tensor(v).detach()
    for k, v in (s.get("_buffers") or {}).items():
        if v is not None and k not in skip:
            out[prefix + k] = torch.as_tensor(v).detach()
    for k, child in (s.get("_modules") or {}).items():
        if child is not None:
            out.update(flatten(child, walk, f"{prefix}{k}.", depth + 1, seen))
    return out


_NODE_REFERENCE = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")
MAX_REFERENCES = 16  # followed in a row before a reference counts as a loop


@dataclass(frozen=True)
class Unresolved:
    """A config value gan3d does not resolve (an interpolation other than a reference to another key, a reference
    to a missing key, a loop): an error only if gan3d reads it."""
    key: str
    why: str


def _plain(value, walk: Walk):
    """OmegaConf nodes and nested dicts -> plain Python, read as data: nothing is resolved but references to other
    keys of the node's own config (`${dataset}`, as the reference's model configs hold), which are followed;
    anything else that interpolates becomes an Unresolved (its text is never kept). The pickled nodes' contents are
    read directly (OmegaConf's own conversion would resolve, and walks shared nodes once per path)."""
    from omegaconf import DictConfig, ListConfig

    if isinstance(value, (DictConfig, ListConfig)):
        root, path = _root_and_path(value, walk)
        tree = _raw(root, walk, 0, {})
        node = _get(tree, path) if path else tree
        return _follow(node, tree, path or "<root>", 0, walk, {})
    return _follow(_raw(value, walk, 0, {}), {}, "<kwargs>", 0, walk, {})


def _raw(node, walk: Walk, depth: int, memo: dict):
    """A pickled OmegaConf node (or plain containers holding some) as plain data, interpolation strings kept."""
    from omegaconf import DictConfig, ListConfig
    from omegaconf.nodes import ValueNode

    walk.step(depth)
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, (DictConfig, ListConfig)):
        content = node.__dict__.get("_content")
        if not isinstance(content, (dict, list)):  # None, '???' or a whole-node interpolation string
            return content if isinstance(content, str) else None
        node = content
    if isinstance(node, ValueNode):
        return _raw(node.__dict__.get("_val"), walk, depth + 1, memo)
    if isinstance(node, dict):
        out: dict = {}
        memo[id(node)] = out
        for k, v in node.items():
            out[k] = _raw(v, walk, depth + 1, memo)
        return out
    if isinstance(node, (list, tuple)):
        out_l: list = []
        memo[id(node)] = out_l
        out_l.extend(_raw(v, walk, depth + 1, memo) for v in node)
        return out_l
    return node


def _root_and_path(node, walk: Walk) -> tuple:
    """The root of a pickled config node and the node's dotted key, found by walking up its parents."""
    keys = []
    for depth in range(MAX_DEPTH + 1):
        walk.step(depth)
        parent = node.__dict__.get("_parent")
        if parent is None:
            return node, ".".join(reversed(keys))
        content = parent.__dict__.get("_content")
        key = next((k for k, v in content.items() if v is node), None) if isinstance(content, dict) else None
        if key is None:
            return node, ".".join(reversed(keys))  # not among its parent's keys: read it as a root
        keys.append(str(key))
        node = parent
    raise CheckpointError(f"{walk.source}: a config nested deeper than {MAX_DEPTH} levels")


def _follow(value, tree: dict, key: str, depth: int, walk: Walk, memo: dict):
    walk.step(depth)
    if isinstance(value, (dict, list)) and id(value) in memo:
        return memo[id(value)]
    if isinstance(value, dict):
        out: dict = {}
        memo[id(value)] = out
        for k, v in value.items():
            out[k] = _follow(v, tree, f"{key}.{k}", depth + 1, walk, memo)
        return out
    if isinstance(value, list):
        out_l: list = []
        memo[id(value)] = out_l
        out_l.extend(_follow(v, tree, f"{key}[{i}]", depth + 1, walk, memo) for i, v in enumerate(value))
        return out_l
    if isinstance(value, str) and "${" in value:
        m = _NODE_REFERENCE.fullmatch(value)
        if m is None:
            return Unresolved(key, "holds an interpolation gan3d does not resolve (only references to other keys)")
        target = _get(tree, m.group(1), _MISSING)
        if target is _MISSING:
            return Unresolved(key, "refers to a key the config lacks")
        if depth >= MAX_REFERENCES + MAX_DEPTH or walk.references(key) > MAX_REFERENCES:
            return Unresolved(key, "is a loop of references")
        return _follow(target, tree, m.group(1), depth + 1, walk, memo)
    return value


_MISSING = object()


def _get(d: dict, dotted: str, default=None):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return default
        d = d[part]
    return d


@dataclass
class Conversion:
    cfg: ExperimentConfig
    states: dict[str, dict[str, torch.Tensor]]  # gan3d module name -> reference-named state dict
    augment_p: Optional[float]
    kimg: float
    report: list[str] = field(default_factory=list)


def infer_config(G, D, preset: Optional[str], source: str, walk: Optional[Walk] = None
                 ) -> tuple[ExperimentConfig, list[str]]:
    """The experiment config a snapshot's networks were built with (what their init kwargs and cfg say), on top
    of a preset for everything a snapshot does not record (data path, training hyper-parameters)."""
    def read(d: dict, dotted: str, default=None):
        v = _get(d, dotted, default)
        if isinstance(v, Unresolved):
            raise CheckpointError(f"{source}: config key '{v.key}' {v.why}")
        return v

    walk = walk or Walk(source, 0)
    gk, gc = _plain(_state(G).get("_init_kwargs") or {}, walk), _plain(_state(G).get("cfg") or {}, walk)
    report = []
    backbone, clamp, bg = read(gc, "backbone", "stylegan2"), read(gc, "clamp_mode", "softplus"), read(gc, "bg_model.type")
    unsupported = [(backbone != "stylegan2", f"backbone {backbone!r}"),
                   (read(gc, "tri_plane.has_view_cond", False), "view-conditioned tri-plane MLP"),
                   ((read(gc, "tri_plane.posenc_period_len", 0) or 0) > 0, "positional encoding in the tri-plane MLP"),
                   (bg is not None, f"background model {bg!r}"),
                   (clamp != "softplus", f"density clamp {clamp!r}"),
                   ((read(gc, "density_shift") or 0) != 0, "a density shift")]
    bad = [what for cond, what in unsupported if cond]
    if bad:
        raise CheckpointError(f"{source}: uses what gan3d does not implement: {', '.join(bad)}")
    values: dict[str, Any] = {}

    def put(key, value, where, convert=None):
        if value is None:
            report.append(f"{key}: not in the snapshot ({where}); the preset's value is kept")
        else:
            values[key] = convert(value) if convert else value

    c_dim = read(gk, "c_dim", 0) or 0
    put("dataset.resolution", read(gk, "img_resolution"), "G img_resolution")
    values["dataset.c_dim"], values["dataset.use_labels"] = c_dim, c_dim > 0
    for k in ("fov", "ray_start", "ray_end", "radius"):
        put(f"dataset.camera.{k}", read(gc, f"dataset.camera.{k}"), f"cfg.dataset.camera.{k}", float)
    put("model.generator.z_dim", read(gk, "z_dim"), "G z_dim")
    put("model.generator.w_dim", read(gk, "w_dim"), "G w_dim")
    values["model.generator.mapping_layers"] = read(gk, "mapping_kwargs.num_layers", 2)
    values["model.generator.camera_cond"] = bool(read(gk, "mapping_kwargs.camera_cond", False))
    put("model.generator.channel_base", read(gk, "channel_base"), "G channel_base")
    put("model.generator.channel_max", read(gk, "channel_max"), "G channel_max")
    put("model.generator.triplane_resolution", read(gc, "tri_plane.res"), "cfg.tri_plane.res")
    put("model.generator.triplane_channels", read(gc, "tri_plane.feat_dim"), "cfg.tri_plane.feat_dim")
    put("model.generator.mlp_layers", read(gc, "tri_plane.mlp.n_layers"), "cfg.tri_plane.mlp.n_layers")
    put("model.generator.mlp_hidden", read(gc, "tri_plane.mlp.hid_dim"), "cfg.tri_plane.mlp.hid_dim")
    steps = read(gc, "num_ray_steps")
    put("model.generator.render.num_coarse", steps, "cfg.num_ray_steps")
    put("model.generator.render.num_fine", steps, "cfg.num_ray_steps")
    put("model.generator.render.cube_scale", read(gc, "dataset.cube_scale"), "cfg.dataset.cube_scale", float)
    put("model.generator.render.white_back", read(gc, "dataset.white_back"), "cfg.dataset.white_back")
    put("model.generator.render.density_noise_std", read(gc, "nerf_noise_std_init"), "cfg.nerf_noise_std_init")
    put("model.generator.render.density_noise_kimg", read(gc, "nerf_noise_kimg_growth"), "cfg.nerf_noise_kimg_growth")
    if D is not None:
        dk, dc = _plain(_state(D).get("_init_kwargs") or {}, walk), _plain(_state(D).get("cfg") or {}, walk)
        patch = read(dk, "img_resolution")
        put("training.patch.resolution", patch, "D img_resolution")
        put("model.discriminator.channel_base", read(dk, "channel_base"), "D channel_base")
        put("model.discriminator.channel_max", read(dk, "channel_max"), "D channel_max")
        put("model.discriminator.hyper_mod", read(dc, "hyper_mod"), "D cfg.hyper_mod")
        values["model.discriminator.hyper_mod_dim"] = 512  # fixed in the reference
        values["model.discriminator.cmap_dim"] = 0  # the reference's: D's channels at 4x4
        put("model.discriminator.camera_cond", read(dc, "camera_cond"), "D cfg.camera_cond")
        mbstd = read(dk, "epilogue_kwargs.mbstd_group_size") or read(dc, "mbstd_group_size")
        put("model.discriminator.mbstd_group", mbstd, "D mbstd_group_size")
        extra, img = read(dc, "num_additional_start_blocks"), values.get("dataset.resolution")
        if extra is not None and img and patch and 2 ** extra * patch != img:
            raise CheckpointError(f"{source}: D has {extra} extra start blocks for {patch}px patches, but gan3d "
                                  f"derives log2({img} / {patch}) = {int(math.log2(img // patch))}")
    elif "training.patch.resolution" not in values:
        put("training.patch.resolution", read(gc, "patch.resolution"), "G cfg.patch.resolution")
    base = config_mod.load_config(preset) if preset else config_mod.load_config()
    values["training.patch.min_scale"] = 0.0  # derived again from the (possibly new) resolutions
    try:
        return config_mod.set_values(base, values), report
    except Exception as e:
        raise CheckpointError(f"{source}: its settings do not make a valid gan3d config: {e}") from None


def convert_snapshot(path: str | Path, preset: Optional[str] = None) -> Conversion:
    """A snapshot's G, G_ema, D (reference names) and the gan3d config that fits them."""
    path = Path(path)
    snap = read_snapshot(path)
    missing = [k for k in ("G_ema",) if k not in snap]
    if missing:
        raise CheckpointError(f"{path}: no {', '.join(missing)} in this snapshot (keys: {', '.join(map(str, snap))})")
    G = snap.get("G") or snap["G_ema"]
    walk = Walk(str(path), path.stat().st_size)
    cfg, report = infer_config(G, snap.get("D"), preset, str(path), walk)
    states = {name: flatten(snap[key], walk) for name, key in (("G", "G"), ("G_ema", "G_ema"), ("D", "D")) if key in snap}
    aug = snap.get("augment_pipe")
    p = _state(aug).get("_buffers", {}).get("p") if aug is not None else None
    optimizers = [f"{k} ({v.class_name})" for k, v in snap.items() if isinstance(v, OptimizerState)]
    if optimizers:
        report.append(f"optimizer states of {', '.join(optimizers)} not imported: Adam starts fresh")
    nimg = _get(snap, "stats.cur_nimg") if isinstance(snap.get("stats"), dict) else None
    m = re.search(r"network-snapshot-(\d+)", path.name)
    if isinstance(nimg, (int, float)) and not isinstance(nimg, bool) and nimg >= 0:
        kimg = nimg / 1000
        report.append(f"kimg {kimg:g} (the snapshot's stats.cur_nimg)")
    else:
        kimg = float(m.group(1)) if m else 0.0
        report.append(f"kimg {kimg:g} (from the file name)" if m else "kimg 0 (the file name does not say)")
    return Conversion(cfg, states, float(p) if p is not None else None, kimg, report)


def convert_state_dict(path: str | Path, preset: Optional[str]) -> Conversion:
    """A plain torch.save file in the reference's naming: {'G': ..., 'G_ema': ..., 'D': ...} state dicts, or one
    generator state dict. It records no settings, so the preset must describe the model."""
    path = Path(path)
    if not preset:
        raise CheckpointError(f"{path}: a state dict records no model settings; pass --preset EXPERIMENT.yaml "
                              f"describing the model it holds")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a tensors-only torch file ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(data, dict) or not data:
        raise CheckpointError(f"{path}: expected a state dict (names -> tensors), got {type(data).__name__}")
    states = {k: data[k] for k in ("G", "G_ema", "D") if isinstance(data.get(k), dict)} or {"G_ema": data}
    for name, sd in states.items():
        bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise CheckpointError(f"{path}: '{name}' holds non-tensor entries, e.g. '{bad[0]}'")
    return Conversion(config_mod.load_config(preset), states, None, 0.0, [f"all settings from {preset}"])
