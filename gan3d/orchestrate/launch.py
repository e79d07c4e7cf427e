"""One training run on Ray Train: `gan3d.train(cfg, ...)` and `gan3d train`.

Everything that can be wrong with the config or the dataset is checked here, on the driver, before Ray
starts. The run directory is {run.storage_path or run.out}/{run.name}: Ray Train's checkpoints and snapshot
live there beside metrics.parquet, samples/ and wandb/, so rerunning the same command resumes the run. With an
object-store storage_path (s3://, gs://) the run files are written to {run.out}/{run.name} on rank 0's node
and mirrored to the URI after every tick (gan3d.storage).
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from gan3d import config as config_mod
from gan3d.config import ExperimentConfig
from gan3d.errors import Gan3dError, no_space
from gan3d.metrics import ranking_metric
from gan3d.orchestrate import lock
from gan3d.storage import RunMirror, is_uri, join, upload, with_scheme
from gan3d.track.store import MetricsStore
from gan3d.orchestrate.runtime import check_reachable, ensure_ray, link_ray_logs, worker_env
from gan3d.training import stop as stop_flags


@dataclass
class RunResult:
    run_dir: Path | str  # a str URI when run.storage_path is an object store; so are the checkpoints
    kimg: float
    stop_reason: str  # done | user | diverged
    metric: Optional[str]  # the ranking metric (fid2k_full or swd)
    best_metric: Optional[float]
    best_checkpoint: Optional[Path | str]
    latest_checkpoint: Optional[Path | str]
    metrics: dict


def train_loop_per_worker(config: dict) -> None:
    """The function Ray Train runs on every worker."""
    from gan3d.training.loop import training_loop
    from gan3d.training.session import RaySession

    cfg = config_mod.from_dict(config["cfg"])
    if not config.get("verbose"):
        _quiet_report_lines()
    session = RaySession(config["run_name"], progress_bar=config.get("progress_bar", False))
    if session.fatal_error() is not None:  # an earlier attempt hit bad data / config / checkpoint: a restart
        return  # cannot fix it; end quietly and let the driver say it once
    try:
        training_loop(cfg, config["run_dir"], session, config["dataset"], config["run_id"], config.get("storage_uri"),
                      console=config.get("console", True))
    except Gan3dError as e:
        if not session.report_fatal(e) or session.world > 1:
            raise  # no driver to tell; or other ranks may wait in a collective: Train's restart ends them


def _quiet_report_lines() -> None:
    """Ray Train V2 logs every report (a full TrainingReport dump) at INFO on a logger named after its source
    file, which the workers' root console handler shows; gan3d's tick line already says it."""
    import logging

    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: nothing to quiet
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def prepare_dataset(cfg: ExperimentConfig, run_dir: Path) -> tuple[str, ExperimentConfig, list[str]]:
    """The dataset path after checking it opens (the synthetic default is made, or reused, in the run dir), the
    experiment with its class count settled against the data, and what the header should say about labels."""
    from gan3d.data import make_synthetic
    from gan3d.data.dataset import open_experiment_dataset, resolve_labels

    d = cfg.dataset
    if not d.path:
        path = run_dir / f"synthetic_{d.synthetic_kind}_{d.resolution}px_{d.synthetic_size}.zip"
        if not path.exists():
            make_synthetic(path, d.synthetic_size, d.resolution, d.camera, d.synthetic_kind, seed=cfg.training.seed)
    else:
        path = d.path if config_mod.uri_scheme(d.path) else Path(d.path).expanduser().resolve()
    ds = open_experiment_dataset(cfg, str(path))  # fail fast
    cfg, notes = resolve_labels(cfg, ds, str(path))
    return str(path), cfg, notes


def share_local_dataset(dataset: str, local_dir: Path, uri: Optional[str]) -> str:
    """The synthetic default is made in a local working dir; with URI storage it is uploaded beside the run
    so that every node reads it from there (other datasets are already where the user put them)."""
    if uri is None or Path(dataset).parent != local_dir:
        return dataset
    return upload(dataset, join(uri, Path(dataset).name))


def resolve_run(cfg: ExperimentConfig, workers=None, gpus_per_worker=None, out=None, name=None) -> ExperimentConfig:
    """Apply the command-line level settings to the config and check the batch split."""
    values = {k: v for k, v in (("run.workers", workers), ("run.gpus_per_worker", gpus_per_worker),
                                 ("run.out", out), ("run.name", name)) if v is not None}
    if not (name or cfg.run.name):
        values["run.name"] = "run"
    cfg = config_mod.set_values(cfg, values) if values else cfg
    config_mod.check_batch(cfg, cfg.run.workers)
    return cfg


def make_trainer(cfg: ExperimentConfig, storage: Path | str, dataset: str, callbacks=(), env: Optional[dict] = None,
                 local_dir: Optional[Path] = None, verbose: bool = False, console: bool = True):
    """The TorchTrainer of one run: run dir = storage / cfg.run.name (Train's checkpoints beside ours). With a
    URI storage, gan3d's files go to local_dir on rank 0's node and are mirrored to the URI."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    metric = ranking_metric(cfg)
    uri = join(str(storage), cfg.run.name) if is_uri(str(storage)) else None
    run_dir = local_dir if uri else Path(storage) / cfg.run.name
    gpus = cfg.run.gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": config_mod.to_dict(cfg), "run_dir": str(run_dir), "dataset": dataset,
                           "run_name": cfg.run.name, "run_id": _run_id(Path(uri or run_dir)),
                           "storage_uri": uri, "progress_bar": sys.stderr.isatty() and console, "verbose": verbose,
                           "console": console},
        scaling_config=ScalingConfig(num_workers=cfg.run.workers, use_gpu=gpus > 0,
                                     placement_strategy=cfg.run.placement_strategy,
                                     resources_per_worker={"CPU": cfg.run.cpus_per_worker,
                                                           **({"GPU": gpus} if gpus > 0 else {})}),
        run_config=RunConfig(
            name=cfg.run.name, storage_path=str(storage), callbacks=list(callbacks),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.num_to_keep,
                                               checkpoint_score_attribute=metric,
                                               checkpoint_score_order="min" if metric else "max"),
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            logging_config=LoggingConfig(log_level="INFO" if verbose else "WARNING"),
            worker_runtime_env={"env_vars": env or worker_env(cfg)}),
    )


def train(cfg: ExperimentConfig, workers: Optional[int] = None, gpus_per_worker: Optional[float] = None,
          address: Optional[str] = None, out: Optional[str] = None, name: Optional[str] = None,
          verbose: bool = False, header: bool = False) -> RunResult:
    """Train one run on Ray Train (an embedded local Ray unless `address` names a cluster). `verbose` lets
    Ray's and Ray Train's INFO lines through; `header` prints what is about to run (the CLI's console)."""
    cfg = resolve_run(cfg, workers, gpus_per_worker, out, name)
    storage = cfg.run.storage_path
    uri = join(storage, cfg.run.name) if is_uri(storage) else None
    out_dir = Path((storage if not uri and storage else cfg.run.out).removeprefix("file://")).expanduser().resolve()
    run_dir = out_dir / cfg.run.name  # with a URI: the local working dir; the run lives at the URI
    run_dir.mkdir(parents=True, exist_ok=True)
    with lock.hold(run_dir, "run"):  # one driver per run: a second is refused, naming the first
        return _train(cfg, storage, uri, out_dir, run_dir, address, verbose, header)


def _train(cfg: ExperimentConfig, storage: str, uri: Optional[str], out_dir: Path, run_dir: Path,
           address: Optional[str], verbose: bool, header: bool) -> RunResult:
    if address:  # an unreachable cluster is said before anything is made
        check_reachable(address, cfg.run.connect_timeout_s)
    dataset, cfg, notes = prepare_dataset(cfg, run_dir)  # config and data problems surface before Ray starts
    if header:
        for line in header_lines(cfg, uri or run_dir, dataset) + [f"gan3d: {n}" for n in notes]:
            print(line, flush=True)
    if uri:
        RunMirror(run_dir, uri).pull([MetricsStore.FILE, "workers.jsonl"])  # the store's, not stale local copies
        dataset = share_local_dataset(dataset, run_dir, uri)

    link = link_ray_logs(run_dir, ensure_ray(address, verbose, cfg.run.connect_timeout_s, owner_dir=run_dir))
    import ray  # after ensure_ray, which sets what Ray reads when first imported
    if header and link is not None and not verbose:
        print(f"gan3d: Ray's own log lines: {link} (--verbose shows them here)", flush=True)
    stop_flag = stop_flags.start_flag(cfg.run.name)
    trainer = make_trainer(cfg, storage if uri else out_dir, dataset, local_dir=run_dir, verbose=verbose)
    previous = stop_flags.install_stop_handlers(stop_flag)
    try:
        result = fit_keeping_signals(trainer)
        fatal = stop_flags.fatal_error(stop_flag)
    except Exception as e:  # Ray Train's controller writes into the run dir too: a full disk there is not retried
        if no_space(e) is None:
            raise
        from gan3d.training.checkpoint import storage_full
        raise storage_full(e, None, run_dir if not uri else None) from None
    finally:
        stop_flags.restore_handlers(previous)
        ray.kill(stop_flag)
    if fatal:  # not transient: said once, no retries; the checkpoints stay as they were
        raise fatal.exception()
    return _run_result(result, uri or run_dir, ranking_metric(cfg), cfg.training.kimg)


def header_lines(cfg: ExperimentConfig, run_dir: Path | str, dataset: str) -> list[str]:
    """The console header of a run: where it lives, what it reads, what it runs on, how big the networks are."""
    import torch

    from gan3d.data.dataset import open_experiment_dataset
    from gan3d.nn import build_discriminator, build_generator, count_parameters, resolve_precision

    d, r = cfg.dataset, cfg.run
    ds = open_experiment_dataset(cfg, dataset)
    poses = "yes" if getattr(ds, "has_poses", False) else "no"
    device = f"{r.gpus_per_worker:g} GPU" if r.gpus_per_worker > 0 else f"{r.cpus_per_worker:g} CPU"
    G, D = build_generator(cfg), build_discriminator(cfg)
    return [f"gan3d: run {run_dir}",
            f"gan3d: dataset {dataset}: {len(ds)} images, {d.resolution}px, poses {poses}",
            f"gan3d: {r.workers} worker(s) x {device}; G {count_parameters(G) / 1e6:.2f}M, "
            f"D {count_parameters(D) / 1e6:.2f}M parameters; {cfg.training.kimg:g} kimg, "
            f"batch {cfg.training.batch}, precision "
            f"{resolve_precision(cfg.training.precision, torch.device('cuda' if r.gpus_per_worker > 0 else 'cpu'))}"
            + (", G's synthesis compiled (torch.compile: the first tick includes building it)" if cfg.training.compile
               else "")
            + (", tri-plane lookup by gan3d's C++ kernel" if cfg.training.triplane_kernel else "")] + [
        f"gan3d: {note}" for note in config_notes(cfg)]


def config_notes(cfg: ExperimentConfig) -> list[str]:
    """Settings that do less than their names suggest, said in the header."""
    g = cfg.model.generator
    notes = []
    if g.render.white_back and not (g.bg.enabled or g.render.open_back):
        notes.append("model.generator.render.white_back changes nothing here: without a background model "
                     "(model.generator.bg.enabled) or model.generator.render.open_back every ray ends opaque (its "
                     "last interval is 1e10, as in the reference), so the model paints the background itself")
    return notes


def _run_id(run_dir: Path) -> str:
    """A stable W&B id per run dir, so a resumed run logs into the same W&B run."""
    import hashlib
    return f"{run_dir.name[:40]}-{hashlib.sha1(str(run_dir).encode()).hexdigest()[:8]}"


def fit_keeping_signals(trainer):
    """trainer.fit() on a helper thread, the main thread waiting. On the main thread Ray Train installs its own
    SIGINT handler over gan3d's (data_parallel_trainer._register_sigint_handler), which aborts the run without a
    checkpoint, so a Ctrl-C never reached gan3d; off the main thread Ray installs none (as inside Tune), and gan3d's
    handlers stay: the first Ctrl-C or SIGTERM lets the workers finish the step and checkpoint."""
    box: dict = {}

    def run():
        try:
            box["result"] = trainer.fit()
        except BaseException as e:  # re-raised on the main thread
            box["error"] = e

    thread = threading.Thread(target=run, name="gan3d-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)  # short waits: the main thread runs signal handlers between them
    if "error" in box:
        raise box["error"]
    return box["result"]


def _checkpoint_path(ckpt, run_dir: Path | str) -> Path | str:
    """A Train checkpoint's location: a local Path, or a URI with the run's scheme."""
    return with_scheme(ckpt.path, run_dir) if isinstance(run_dir, str) else Path(ckpt.path)


def _run_result(result, run_dir: Path | str, metric: Optional[str], target_kimg: float) -> RunResult:
    from gan3d.training.checkpoint import read_checkpoint

    latest = _checkpoint_path(result.checkpoint, run_dir) if result.checkpoint is not None else None
    best = best_value = None
    for ckpt, m in result.best_checkpoints or []:
        if metric and m.get(metric) is not None and (best_value is None or m[metric] < best_value):
            best, best_value = _checkpoint_path(ckpt, run_dir), float(m[metric])
    metrics = dict(result.metrics or {})
    if not metrics and latest is not None:  # a rerun of a finished run reports nothing new
        ck = read_checkpoint(latest)
        metrics = {"kimg": ck.counters.kimg, "stop_reason": "done", **ck.metrics}
    if best is None and latest is not None:
        best = latest
        best_value = metrics.get(metric) if metric else None
    kimg = float(metrics.get("kimg", 0.0))
    # a rerun at or past the target has nothing to train: done, whatever stopped the attempt Train remembers
    stop_reason = "done" if kimg >= target_kimg - 1e-9 else str(metrics.get("stop_reason", ""))
    return RunResult(run_dir=run_dir, kimg=kimg, stop_reason=stop_reason, metric=metric, best_metric=best_value,
                     best_checkpoint=best, latest_checkpoint=latest, metrics=metrics)
