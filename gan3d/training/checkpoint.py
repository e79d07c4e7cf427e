"""Checkpoints: one directory holding tensors (state.pt, loaded with weights_only=True: no code is ever
unpickled), the resolved config (config.yaml) and the counters (meta.json).

A checkpoint holds G, D, G_ema, both optimizers, the augmentation p, counters and RNG states, so that
resuming continues at the same kimg with the same schedules.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from gan3d import config as config_mod
from gan3d.config import ExperimentConfig
from gan3d.errors import NO_SPACE, CheckpointError, StorageFull, first_line, no_space
from gan3d.storage import file_sha256

STATE, CONFIG, META = "state.pt", "config.yaml", "meta.json"
IMPORTABLE = (".pkl", ".pt", ".pth")  # the reference's snapshots and state dicts, converted on the fly
FORMAT = "gan3d-checkpoint-v1"


@dataclass
class Counters:
    cur_nimg: int = 0
    step: int = 0
    tick: int = 0
    epoch: int = 0  # data epochs consumed (approximate: for reshuffling after a resume)

    @property
    def kimg(self) -> float:
        return self.cur_nimg / 1000


def write_checkpoint(directory: str | Path, cfg: ExperimentConfig, modules: dict[str, torch.nn.Module],
                     optimizers: dict[str, torch.optim.Optimizer], counters: Counters, rng_state: dict[str, Any],
                     metrics: dict[str, float], dataset: str = "", extra_meta: Optional[dict] = None,
                     extra_state: Optional[dict[str, torch.Tensor]] = None) -> Path:
    """Write into `directory` via a temporary sibling and a rename, so a crash never leaves half a checkpoint.
    `extra_state`: tensors kept beside the networks (the trained views, render.views)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory.parent))
    state = {f"model/{k}": m.state_dict() for k, m in modules.items()}
    state.update({f"optim/{k}": o.state_dict() for k, o in optimizers.items()})
    state["rng"] = rng_state
    state.update(extra_state or {})
    with open(tmp / STATE, "wb") as f:  # through Python's file: a full disk is an OSError with its errno, not
        torch.save(state, f)            # torch's C++ stream's RuntimeError
    (tmp / CONFIG).write_text(config_mod.to_yaml(cfg))
    meta = {"format": FORMAT, "state_sha256": file_sha256(tmp / STATE),
            "cur_nimg": counters.cur_nimg, "step": counters.step, "tick": counters.tick,
            "epoch": counters.epoch, "kimg": counters.kimg, "metrics": metrics, "dataset": dataset, **(extra_meta or {})}
    (tmp / META).write_text(json.dumps(meta, indent=1))
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


@dataclass
class LoadedCheckpoint:
    path: Path
    cfg: ExperimentConfig
    state: dict
    counters: Counters
    metrics: dict


def read_checkpoint(path: str | Path) -> LoadedCheckpoint:
    from gan3d.storage import resolve_local

    path = resolve_local(path)  # a checkpoint at an s3:// / gs:// URI is downloaded to the local cache
    if path.is_file() and path.suffix in IMPORTABLE and path.name != STATE:
        from gan3d.training.snapshot_import import imported
        path = imported(path)  # a reference snapshot / state dict, converted once
    if path.is_file() and path.name == STATE:
        path = path.parent
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if not (path / META).is_file() or not (path / STATE).is_file():
        raise CheckpointError(f"{path}: not a gan3d checkpoint (expected {STATE}, {CONFIG} and {META} in a directory)")
    try:
        meta = json.loads((path / META).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / META}: not valid JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path / META}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("state_sha256") and file_sha256(path / STATE) != meta["state_sha256"]:
        raise CheckpointError(f"{path / STATE}: damaged (its checksum differs from the one written with it)")
    try:
        state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's refusal is many lines long: name what it refused
        refused = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"'{refused.group(1)}'" if refused else "an object that is not tensors"
        raise CheckpointError(f"{path / STATE}: holds {what}; a gan3d checkpoint holds tensors only "
                              f"(nothing from the file was run)") from None
    except Exception as e:
        raise CheckpointError(f"{path / STATE}: cannot be loaded as tensors ({type(e).__name__}: "
                              f"{first_line(e)})") from None
    cfg = config_mod.load_config(path / CONFIG)
    counters = Counters(meta["cur_nimg"], meta["step"], meta["tick"], meta.get("epoch", 0))
    return LoadedCheckpoint(path, cfg, state, counters, meta.get("metrics", {}))


def newest_valid(run_dir: Path) -> Optional[LoadedCheckpoint]:
    """The newest checkpoint of a run that reads; each damaged one on the way is skipped with a line saying why."""
    for path in reversed(list_checkpoints(Path(run_dir))):
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as e:
            print(f"gan3d: skipped {path.name}: {str(e).split(': ', 1)[-1]}", flush=True)
            continue
        print(f"gan3d: using {path.name} at kimg {ckpt.counters.kimg:.3f}", flush=True)
        return ckpt
    return None


def stray_checkpoints(run_dir: Path, latest: LoadedCheckpoint) -> list[Path]:
    """Ray Train checkpoint dirs that a killed attempt left after the checkpoint a new attempt resumes from:
    newer than it, or never completed (no readable meta.json or no state.pt). Ray Train never registered
    them, so `run.num_to_keep` would never remove them, and the run goes on from `latest` either way.
    Nothing when `latest` lives elsewhere (a PBT trial that exploited another trial's checkpoint): this run's
    own newer checkpoints are then registered ones that other trials may still exploit."""
    if Path(latest.path).resolve().parent != Path(run_dir).resolve():
        return []
    stray = []
    for p in sorted(Path(run_dir).glob("checkpoint_*")):
        if not p.is_dir() or p.resolve() == Path(latest.path).resolve():
            continue
        try:
            newer = int(json.loads((p / META).read_text())["cur_nimg"]) > latest.counters.cur_nimg
            complete = (p / STATE).is_file()
        except (OSError, ValueError, KeyError, TypeError):
            newer, complete = False, False
        if newer or not complete:
            stray.append(p)
    return stray


def load_modules(ckpt: LoadedCheckpoint, modules: dict[str, torch.nn.Module],
                 optimizers: Optional[dict[str, torch.optim.Optimizer]] = None) -> None:
    """Copy weights (and optimizer states, when given) into live modules; names the part that does not fit."""
    for k, m in modules.items():
        key = f"model/{k}"
        if key not in ckpt.state:
            raise CheckpointError(f"{ckpt.path}: no '{k}' in this checkpoint")
        try:
            m.load_state_dict(ckpt.state[key])
        except RuntimeError as e:
            raise CheckpointError(f"{ckpt.path}: '{k}' does not fit the configured model "
                                  f"({str(e).splitlines()[0]}); were model settings overridden?") from None
    for k, o in (optimizers or {}).items():
        if f"optim/{k}" in ckpt.state:  # an imported reference snapshot has none: Adam starts fresh
            o.load_state_dict(ckpt.state[f"optim/{k}"])


def storage_full(e: BaseException, written: Optional[Path], run_dir: Optional[Path]) -> StorageFull:
    """The one line for a checkpoint a full (over-quota, read-only) filesystem refused: which path, how much it
    needed, what is free there. What was partly written is removed: the temporary copy and, in a local `run_dir`,
    any checkpoint directory that is not whole (a rerun resumes from the last whole one)."""
    err = no_space(e)
    where = Path(getattr(err, "filename", None) or (run_dir or written or "."))
    size = sum(f.stat().st_size for f in written.rglob("*") if f.is_file()) if written and written.exists() else 0
    probe = next((p for p in [where, *where.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    removed = []
    for ckpt in list_candidates(run_dir) if run_dir is not None else []:
        try:
            read_checkpoint(ckpt)
        except CheckpointError:
            shutil.rmtree(ckpt, ignore_errors=True)
            removed.append(ckpt.name)
    why = next((text for code, text in NO_SPACE.items() if err.errno == code or os.strerror(code) in str(err)),
               "no space left")
    return StorageFull(f"{where}: cannot write a checkpoint there: {why} (the checkpoint needs "
                       f"{size / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free on that filesystem); free space or set "
                       f"run.out / run.storage_path elsewhere, then rerun to resume from the last checkpoint"
                       + (f" (removed the partial {', '.join(removed)})" if removed else ""))


def list_candidates(run_dir: Path) -> list[Path]:
    """Every checkpoint-like directory of a run, whole or not."""
    return sorted(p for pattern in ("checkpoint_*", "checkpoints/checkpoint_*") for p in Path(run_dir).glob(pattern)
                  if p.is_dir())


def list_checkpoints(run_dir: Path) -> list[Path]:
    """gan3d checkpoints of a run: Ray Train's checkpoint_* dirs, or a direct run's checkpoints/checkpoint_*."""
    found = [p for pattern in ("checkpoint_*", "checkpoints/checkpoint_*") for p in run_dir.glob(pattern)
             if p.is_dir() and (p / META).is_file() and (p / STATE).is_file()]

    def nimg(p: Path) -> int:
        try:
            return int(json.loads((p / META).read_text())["cur_nimg"])
        except (ValueError, KeyError, TypeError):
            return -1  # a damaged meta.json sorts first; reading it says what is wrong
    return sorted(found, key=nimg)


def best_checkpoint(path: str | Path, metric: Optional[str] = None) -> tuple[Path, Optional[str]]:
    """A checkpoint dir as is; a run dir -> its best checkpoint by `metric` (default: the run's FID if it
    logged one, else SWD), or its latest when no checkpoint carries the metric. A URI is downloaded first."""
    from gan3d.metrics import ranking_of_logged
    from gan3d.storage import resolve_local

    path = resolve_local(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such run directory or checkpoint")
    if (path / META).is_file() or (path / STATE).is_file() or (path.is_file() and path.suffix in IMPORTABLE):
        return path, metric
    ckpts = list_checkpoints(path)
    if not ckpts:
        raise CheckpointError(f"{path}: no gan3d checkpoints in this run directory (expected checkpoint_*/ "
                              f"with {STATE} and {META})")
    metas = []
    for p in ckpts:
        try:
            metas.append(json.loads((p / META).read_text()).get("metrics", {}))
        except ValueError:
            metas.append({})
    if metric is None:
        seen = {k for m in metas for k in m}
        metric = ranking_of_logged(seen)
    scored = sorted((m[metric], i) for i, m in enumerate(metas) if metric and m.get(metric) is not None
                    and math.isfinite(m[metric]))
    order = [ckpts[i] for _, i in scored] + [p for p in reversed(ckpts) if p not in {ckpts[i] for _, i in scored}]
    for rank, candidate in enumerate(order):  # the best that reads; a damaged one is skipped, once, with a line
        try:
            read_checkpoint(candidate)
        except CheckpointError as e:
            nxt = order[rank + 1].name if rank + 1 < len(order) else "none left"
            print(f"gan3d: skipped {candidate.name} ({str(e).split(': ', 1)[-1]}); next: {nxt}", flush=True)
            continue
        return candidate, metric
    raise CheckpointError(f"{path}: no readable checkpoint in this run directory ({len(order)} damaged)")


def load_generator(checkpoint, device="cpu", ema: bool = True, ray_step_multiplier: float = 1.0):
    """G_ema (or G) from a checkpoint directory, a run directory (its best checkpoint) or a reference snapshot, in
    eval mode, with the views it trained on; ray_step_multiplier scales the samples per ray."""
    from gan3d.nn import build_generator

    from gan3d.render.views import TrainedViews

    ckpt = read_checkpoint(best_checkpoint(checkpoint)[0])  # a run directory means its best checkpoint
    cfg = ckpt.cfg
    if ray_step_multiplier != 1.0:
        r = cfg.model.generator.render
        cfg = config_mod.set_values(cfg, {"model.generator.render.num_coarse": max(2, round(r.num_coarse * ray_step_multiplier)),
                                          "model.generator.render.num_fine": round(r.num_fine * ray_step_multiplier)})
    G = build_generator(cfg)
    load_modules(ckpt, {"G_ema" if ema else "G": G})
    G.trained_views = ckpt.state.get(TrainedViews.KEY)  # the dataset's poses it trained on, if it drew from them
    return G.eval().requires_grad_(False).to(device)
