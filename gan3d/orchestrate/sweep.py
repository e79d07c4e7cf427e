"""Sweeps on Ray Tune: every trial is a full Ray Train run launched from a Tune function trainable
(Ray's Train-inside-Tune pattern; RAY_NOTES.md has what was checked here).

Per trial: a TorchTrainer named after the trial id (no timestamp, so `Tuner.restore` continues it from
Train's own snapshot) under {sweep_dir}/runs/. A Train UserCallback puts rank 0's metrics and checkpoint
path on a queue; the trainable forwards them with `ray.tune.report(..., checkpoint=...)`, which is what
PBT needs to copy a strong trial's state. After an exploit the trial continues from the other trial's
checkpoint (kimg, schedules and optimizer state intact) under a new Train run name, with its perturbed
hyperparameters. The sweep dir holds trials.parquet (one row per trial, updated as trials report) and
exploits.jsonl (one line per PBT exploit).

`out` may be an object-store URI (s3://, gs://): Tune keeps its experiment state there, each trial's Train run
lives at {out}/{name}/runs/{run} (gan3d.storage mirrors its files), trials.parquet is copied there after every
update, and PBT exploits pass checkpoints through it. Local copies go to a working dir on each node.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pyarrow.parquet as pq
from ray import tune

from gan3d import config as config_mod
from gan3d.errors import Gan3dError
from gan3d.orchestrate import lock, sweep_spec
# the callbacks' classes are also reached here by sweep state that earlier versions pickled
from gan3d.orchestrate.sweep_callbacks import TRIALS, SweepConsole, TrialsTable
from gan3d.orchestrate.sweep_spec import Sweep, load_sweep
from gan3d.storage import RunMirror, cache_root, download, is_uri, join, upload, with_scheme

MARKER = "gan3d_trial.json"


@dataclass
class SweepResult:
    sweep_dir: Path | str  # str URIs when the sweep's out is an object store
    trials: Any  # pandas DataFrame, one row per trial
    metric: str
    best_trial: Optional[str]
    best_run_dir: Optional[Path | str]
    best_checkpoint: Optional[Path | str]


def _local_dir(uri: str) -> Path:
    """The working directory on this node for a sweep stored at a URI."""
    return cache_root() / "sweeps" / uri.replace("://", "/").strip("/")


def _fetch(path: str, uri: Optional[str], dest: Path) -> None:
    """A Train checkpoint directory copied into dest (Train gives object-store paths without their scheme)."""
    if uri is None:
        shutil.copytree(path, dest, dirs_exist_ok=True)
    else:
        download(with_scheme(path, uri), dest)


def _forward_callback(queue):
    from ray.train import UserCallback

    class ForwardToTune(UserCallback):
        """Runs in the Train controller: hands rank 0's report (and checkpoint path) to the trainable."""

        def after_report(self, run_context, metrics, checkpoint):
            queue.put({"metrics": dict(metrics[0]), "checkpoint": checkpoint.path if checkpoint else None})

    return ForwardToTune()


def run_trial(params: dict, base: dict, sweep_dir: str, dataset: str, metric: str, group: str,
              tune_checkpoints: bool, verbose: bool = False) -> None:
    """The Tune function trainable: one Ray Train run with this trial's hyperparameters. With
    `tune_checkpoints` (PBT / PB2) every Train checkpoint is also handed to Tune, for exploits."""
    from ray.util.queue import Empty, Queue

    from gan3d.orchestrate.launch import make_trainer

    trial_id = tune.get_context().get_trial_id()
    uri = sweep_dir if is_uri(sweep_dir) else None
    sweep_dir = _local_dir(uri) if uri else Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    params = {k: v.item() if hasattr(v, "item") else v for k, v in params.items()}  # numpy scalars -> Python
    tags = [f"{k.split('.')[-1]}={v}" for k, v in sorted(params.items())]
    values = {**params, "logging.group": group, "logging.tags": tags, "dataset.path": dataset}
    run_name, resume_from = trial_id, None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            marker = json.loads((Path(d) / MARKER).read_text())
            if marker["trial"] == trial_id:  # the driver restarted: Train continues its own snapshot
                run_name = marker["run_name"]
            else:  # a PBT exploit: continue from another trial's state with our new hyperparameters
                keep = sweep_dir / "exploits" / f"{trial_id}-{marker['kimg']:.3f}-{os.getpid()}"
                shutil.copytree(d, keep, ignore=shutil.ignore_patterns(MARKER))
                resume_from = keep
                if uri:  # the trial's Train workers may run on other nodes: they read it from the store
                    resume_from = join(uri, "exploits", keep.name)
                    RunMirror(keep, resume_from).push()
                run_name = f"{trial_id}-from-{marker['trial']}-{marker['kimg']:.3f}"
                with open(sweep_dir / "exploits.jsonl", "a") as f:
                    f.write(json.dumps({"trial": trial_id, "source_trial": marker["trial"], "kimg": marker["kimg"],
                                        "checkpoint": str(resume_from), "run_name": run_name, "params": params}) + "\n")
                if uri:
                    upload(sweep_dir / "exploits.jsonl", join(uri, "exploits.jsonl"))
    if resume_from is not None:
        values["training.resume"] = str(resume_from)
    cfg = config_mod.set_values(config_mod.from_dict(base), {**values, "run.name": run_name})
    finished = _finished_row(sweep_dir / "runs" / run_name, join(uri, "runs", run_name) if uri else None,
                             cfg.training.kimg) if resume_from is None else None
    if finished is not None:  # a driver killed after this trial finished, before Tune recorded it: say so again
        tune.report({**finished, "run_name": run_name})
        return

    queue = Queue(actor_options={"num_cpus": 0})
    trainer = make_trainer(cfg, join(uri, "runs") if uri else sweep_dir / "runs", dataset,
                           callbacks=[_forward_callback(queue)], local_dir=sweep_dir / "runs" / run_name,
                           verbose=verbose, console=verbose)
    outcome: dict = {}

    def fit():
        try:
            outcome["result"] = trainer.fit()
        except BaseException as e:  # re-raised in the trainable's thread
            outcome["error"] = e

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    last_metric = None
    while thread.is_alive() or not queue.empty():
        try:
            item = queue.get(timeout=0.5)
        except Empty:
            continue
        m = {k: v for k, v in item["metrics"].items() if isinstance(v, (int, float))}
        last_metric = m.get(metric, last_metric)
        if last_metric is None:
            continue  # schedulers compare the metric: forward from its first value on
        m[metric] = last_metric
        m["run_name"] = run_name
        if item["checkpoint"] and tune_checkpoints:
            with tempfile.TemporaryDirectory() as tmp:
                _fetch(item["checkpoint"], uri, Path(tmp))
                (Path(tmp) / MARKER).write_text(json.dumps({"trial": trial_id, "run_name": run_name,
                                                            "kimg": m.get("kimg", 0.0)}))
                tune.report(m, checkpoint=tune.Checkpoint.from_directory(tmp))
        else:
            tune.report(m)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]


def _finished_row(run_dir: Path, uri: Optional[str], kimg: float) -> Optional[dict]:
    """The last tick row of a trial's run that already reached `kimg` (numbers only), else None."""
    from gan3d.track.store import FILE

    if uri:
        RunMirror(run_dir, uri).pull([FILE])
    if not (run_dir / FILE).is_file():
        return None
    rows = pq.read_table(run_dir / FILE).to_pylist()
    if not rows or rows[-1].get("kimg", 0) < kimg - 1e-9:
        return None
    return {k: v for k, v in rows[-1].items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


def check_trusted_state(sweep_dir: Path) -> None:
    """Tune's restore unpickles the sweep's state files, so whoever can write them can run code as this user:
    refuse pickles owned by someone else or writable by group/others. (A sweep in a bucket trusts the bucket.)"""
    for f in sorted(sweep_dir.rglob("*.pkl")):
        st = f.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise Gan3dError(f"{f}: Tune would unpickle this sweep state file, but it is "
                             f"{'owned by uid ' + str(st.st_uid) if st.st_uid != os.getuid() else 'writable by group/others'}"
                             f"; check it, then `chmod go-w` / `chown` it to resume the sweep")


def sweep(spec: Sweep | str, overrides=(), address: Optional[str] = None, resume: bool = False,
          verbose: bool = False) -> SweepResult:
    """Run (or continue) a sweep; `spec` is a parsed Sweep or a sweep YAML path. `verbose` shows Tune's own
    tables and every trial's tick lines besides gan3d's trial table."""
    if not isinstance(spec, Sweep):
        spec = load_sweep(spec, overrides)
    s = spec.settings
    uri = join(s.out, s.name) if is_uri(s.out) else None
    out = s.out if uri else Path(s.out).expanduser().resolve()
    sweep_dir = _local_dir(uri) if uri else out / s.name  # with a URI: this machine's working copy
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with lock.hold(sweep_dir, "sweep"):  # one driver per sweep: a second is refused, naming the first
        return _sweep(spec, sweep_dir, out, uri, address, resume, verbose)


def _sweep(spec: Sweep, sweep_dir: Path, out, uri: Optional[str], address: Optional[str], resume: bool,
           verbose: bool) -> SweepResult:
    import ray

    from gan3d.orchestrate.launch import prepare_dataset, share_local_dataset
    from gan3d.orchestrate.runtime import ensure_ray

    s, base, metric = spec.settings, spec.base, spec.metric
    r = s.resources
    base = config_mod.set_values(base, {"run.workers": r.workers, "run.cpus_per_worker": r.cpus_per_worker,
                                        "run.gpus_per_worker": r.gpus_per_worker})
    dataset, base, notes = prepare_dataset(base, sweep_dir)
    for note in notes:
        print(f"gan3d: {note}", flush=True)
    dataset = share_local_dataset(dataset, sweep_dir, uri)
    ensure_ray(address, verbose, base.run.connect_timeout_s, owner_dir=sweep_dir)
    fit = sweep_spec.trials_that_fit(s, ray.cluster_resources())
    # PBT / PB2 copy checkpoints between trials: Tune keeps every one it was handed, because a trial may
    # exploit another's checkpoint after that trial has moved on (Tune's num_to_keep deleted them under PBT).
    # Other schedulers resume from each trial's Train snapshot and hand Tune no checkpoints.
    population_based = s.scheduler.kind in ("pbt", "pb2")
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=config_mod.to_dict(base), sweep_dir=uri or str(sweep_dir), dataset=dataset,
                             metric=metric, group=s.name, tune_checkpoints=population_based, verbose=verbose),
        {"cpu": 0.01})  # the trial driver only waits; its Train workers hold the real resources
    state = uri or str(sweep_dir)  # where Tune keeps the experiment state (tuner.pkl, trial records)
    if (resume or uri or (sweep_dir / "tuner.pkl").exists()) and tune.Tuner.can_restore(state):
        if not uri:
            check_trusted_state(sweep_dir)
        tuner = tune.Tuner.restore(state, trainable, resume_unfinished=True, restart_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=sweep_spec.param_space(s),
            tune_config=tune.TuneConfig(metric=metric, mode=s.mode, scheduler=sweep_spec.scheduler(s, base, metric),
                                        search_alg=sweep_spec.search_alg(s, metric), num_samples=s.num_samples,
                                        max_concurrent_trials=min(s.max_concurrent_trials or fit, fit),
                                        reuse_actors=False),
            run_config=tune.RunConfig(name=s.name, storage_path=str(out),
                                      callbacks=[TrialsTable(str(sweep_dir / TRIALS), metric, s.mode, uri),
                                                 SweepConsole(metric, s.mode, base.training.kimg)],
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                                      verbose=1 if verbose else 0))
    results = tuner.fit()
    return _sweep_result(results, sweep_dir, metric, s.mode, uri)


def _sweep_result(results, sweep_dir: Path, metric: str, mode: str, uri: Optional[str] = None) -> SweepResult:
    trials = pq.read_table(sweep_dir / TRIALS).to_pandas() if (sweep_dir / TRIALS).is_file() else None
    best_trial = best_run = best_ckpt = None
    try:
        best = results.get_best_result(metric=metric, mode=mode, scope="all")
        best_trial = best.metrics.get("trial_id")
        if best.metrics.get("run_name"):
            best_run = join(uri, "runs", best.metrics["run_name"]) if uri else sweep_dir / "runs" / best.metrics["run_name"]
        if best.checkpoint is not None:  # PBT / PB2 sweeps hand Tune their checkpoints
            best_ckpt = with_scheme(best.checkpoint.path, uri) if uri else Path(best.checkpoint.path)
        elif best_run is not None:
            from gan3d.training.checkpoint import best_checkpoint
            best_ckpt = best_checkpoint(best_run, metric)[0]
    except (RuntimeError, ValueError, KeyError, Gan3dError):
        pass  # no trial reported the metric, or no checkpoint was written
    return SweepResult(uri or sweep_dir, trials, metric, best_trial, best_run, best_ckpt)
