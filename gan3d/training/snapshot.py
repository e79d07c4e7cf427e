"""The reference implementation's training snapshots (`network-snapshot-<kimg>.pkl`) converted into gan3d
checkpoints: the networks' settings read from their init arguments and configs, the weights renamed.

A snapshot is the pickled dict its training loop writes (training_loop.py:426-443): G, D, G_ema, augment_pipe,
the two Adam optimizers G_opt / D_opt, vis, stats and training_set_kwargs, opened by gan3d.training.snapshot_pickle
without running anything. Configs are read as data: a reference to another key of the same config (`${dataset}`)
is followed, any other interpolation is an error naming its key; the optimizers' state is not imported (the
report says so).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from gan3d import config as config_mod
from gan3d.config import ExperimentConfig
from gan3d.errors import CheckpointError
from gan3d.training.snapshot_pickle import MAX_DEPTH, OptimizerState, Walk, flatten, module_state, read_snapshot

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
    gk, gc = _plain(module_state(G).get("_init_kwargs") or {}, walk), _plain(module_state(G).get("cfg") or {}, walk)
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
        dk, dc = _plain(module_state(D).get("_init_kwargs") or {}, walk), _plain(module_state(D).get("cfg") or {}, walk)
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
    p = module_state(aug).get("_buffers", {}).get("p") if aug is not None else None
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
