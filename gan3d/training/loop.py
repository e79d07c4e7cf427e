"""The per-worker training loop: one function split by one-line section comments (after NVlabs EDM2).
Resume = rerun: the loop starts from the session's latest checkpoint when there is one."""
from __future__ import annotations

import math
import resource
import shutil
from pathlib import Path
from typing import Optional

import torch

from gan3d.config import ExperimentConfig
from gan3d.data.dataset import open_experiment_dataset, real_batches, resolve_labels
from gan3d.draws import RandomDraws
from gan3d.errors import no_space
from gan3d.metrics import evaluate, ranking_metric
from gan3d.render.views import TrainedViews, subsample
from gan3d.training import schedules
from gan3d.training.allocator import use_cpu_malloc
from gan3d.training.augment import AdaStatistic
from gan3d.training.build import build_networks
from gan3d.training.checkpoint import Counters, storage_full, write_checkpoint
from gan3d.training.health import HealthMonitor
from gan3d.training.phases import Batch, GanParts, PosePool, Progress, training_step
from gan3d.training.resume import capture_rng, resume
from gan3d.training.session import Session, checkpoint_tmpdir, record_placement
from gan3d.training.sink import Sink, TickStats, all_mean


def _crossed(prev_nimg: int, cur_nimg: int, interval_kimg: float) -> bool:
    step = interval_kimg * 1000
    return math.floor(cur_nimg / step) > math.floor(prev_nimg / step)


STOP_POLL_STEPS = 16  # the driver's stop flag is asked at ticks and every this many steps (a few seconds)


def pose_pool(dataset, c_dim: int) -> PosePool:
    """The dataset's cameras and one-hot labels, mirrored entries included, for the fakes to draw from."""
    angles, labels = dataset.pose_pool()
    onehot = (torch.nn.functional.one_hot(torch.as_tensor(labels), c_dim).float() if c_dim
              else torch.zeros(len(labels), 0))
    return PosePool(torch.as_tensor(angles) if angles is not None else None, onehot)


def trained_views(cfg: ExperimentConfig, pool: PosePool) -> TrainedViews:
    """The views this run trains on: the dataset's poses when fakes draw from them, else the camera prior's."""
    cam = cfg.dataset.camera
    if cam.dist == "dataset" and pool.angles is not None:
        return TrainedViews(subsample(pool.angles), "dataset", cam)
    return TrainedViews.prior(cam)


def training_loop(cfg: ExperimentConfig, run_dir: str | Path, session: Session, dataset_path: str, run_id: str,
                  storage_uri: Optional[str] = None, console: bool = True) -> dict:
    """Train until cfg.training.kimg (or a stop request / divergence); returns the last tick's row.
    With `storage_uri`, run_dir is a local working directory that rank 0 mirrors there after every tick.
    `console=False` (sweep trials) keeps the run's lines off stdout: the sweep prints its own table."""
    # Setup.
    run_dir, t = Path(run_dir), cfg.training
    run_dir.mkdir(parents=True, exist_ok=True)
    rank, world, device = session.rank, session.world, session.device
    prepare_device(device, cfg)
    batch_per_worker = t.batch // world
    batch_gpu = t.batch_gpu or batch_per_worker
    num_accum = max(1, batch_per_worker // batch_gpu)

    # Data.
    dataset = open_experiment_dataset(cfg, dataset_path)
    cfg, _ = resolve_labels(cfg, dataset, dataset_path)  # the driver said its notes; a direct call settles c_dim
    c_dim = cfg.dataset.c_dim if cfg.dataset.use_labels else 0
    pool = pose_pool(dataset, c_dim)
    views = trained_views(cfg, pool)

    # Networks: identical initial weights on every rank (same seed), then rank-specific randomness.
    net = build_networks(cfg, device, batch_gpu)
    G, D, G_ema, augment, optimizers, modules = net.G, net.D, net.G_ema, net.augment, net.optimizers, net.modules

    # Resume, and rank 0's outlets.
    sink = Sink(cfg, run_dir, session, storage_uri, console) if rank == 0 else Sink.silent()
    start = resume(cfg, session, run_dir, modules, optimizers, rank, world, sink.say, storage_uri is None)
    counters, last_metrics = start.counters, start.metrics
    parts, phases = GanParts(cfg, G, D, augment, RandomDraws(start.np_rng), pool, G_ema), net.phases
    sink.pull()
    record_placement(session, run_dir, counters.kimg)
    sink.say(start.line)
    if counters.cur_nimg >= t.kimg * 1000:  # a rerun of a finished run has nothing left to do (and logs nothing)
        return {"kimg": counters.kimg, "stop_reason": "done", **last_metrics}
    main = ranking_metric(cfg)
    sink.open(run_id, counters.cur_nimg, start.latest is not None, views, c_dim, device)
    health = HealthMonitor(last_metrics.get("swd", math.inf) if main in last_metrics else math.inf)

    # Main loop.
    dataset_size = max(len(dataset), 1)
    batches = real_batches(dataset, batch_per_worker, rank, world, t.seed, num_workers=0, start_epoch=counters.epoch)
    stats, ada, row = TickStats(counters.cur_nimg), AdaStatistic(), {}
    try:
        while True:
            # Reals -> micro-batches; the GAN phases and G_ema; ADA's p from E[sign(D(real))] of each interval.
            micro = real_micro_batches(next(batches), c_dim, batch_gpu, num_accum, device)
            step_stats = training_step(parts, phases, optimizers, micro, Progress(counters.cur_nimg, counters.step))
            stats.add(step_stats)
            ada.observe(step_stats)
            if t.augment.kind == "ada" and (counters.step + 1) % t.augment.interval == 0 and (r := ada.take()) is not None:
                augment.update(all_mean({"r": r}, world, device)["r"], t.batch * t.augment.interval)

            # Counters and the stop/tick decisions (identical on every rank).
            counters.cur_nimg, counters.step = counters.cur_nimg + t.batch, counters.step + 1
            counters.epoch = counters.cur_nimg // dataset_size
            sink.step(t.batch)
            done = counters.cur_nimg >= t.kimg * 1000
            tick_due = counters.cur_nimg >= stats.start_nimg + t.tick_kimg * 1000
            stop = (done or tick_due or counters.step % STOP_POLL_STEPS == 0) and session.should_stop()
            if not (done or stop or tick_due):
                continue

            # The tick: statistics, metrics and media (rank 0), health, checkpoint and report, its line.
            prev_nimg, counters.tick = stats.start_nimg, counters.tick + 1
            row = tick_row(cfg, counters, stats.close(counters.cur_nimg, world, device), augment, device)
            snapshot = done or stop or _crossed(prev_nimg, counters.cur_nimg, t.snap_kimg)
            reason = None
            if rank == 0:
                unranked = snapshot and main is not None and main not in last_metrics
                if cfg.metrics.metrics and (done or unranked or _crossed(prev_nimg, counters.cur_nimg, t.metric_kimg)):
                    values, protocols = evaluate(G_ema, dataset, cfg, list(cfg.metrics.metrics), device, seed=t.seed,
                                                 dataset_id=dataset_path)
                    last_metrics.update(values)
                    row.update(values, metric_protocols=str(protocols))
                if done or _crossed(prev_nimg, counters.cur_nimg, t.image_kimg):
                    sink.media(G_ema, counters.kimg)
                if (reason := health.check(row)) is not None:
                    sink.alert(reason)
            halt = all_mean({"d": float(reason is not None)}, world, device)["d"] > 0 and t.stop_on_divergence
            row["diverged"] = float(halt or reason is not None)
            row["stop_reason"] = "done" if done else "user" if stop else "diverged" if halt else ""
            numeric = report_tick(cfg, session, row, modules, optimizers, counters, start.np_rng, last_metrics,
                                  dataset_path, views, main, rank == 0 and (snapshot or halt), run_dir, storage_uri)
            sink.tick(row, numeric, counters.tick, main)
            if done or stop or halt:
                break
    except BaseException:  # bad data, a full disk, Ctrl-C: the W&B run and the progress bar end too
        sink.close(ok=False)
        raise
    sink.close(ok=row.get("stop_reason") == "done")
    return row


def prepare_device(device: torch.device, cfg: ExperimentConfig) -> None:
    """Threads, the CPU allocator's reuse of freed pages, denormals, cuDNN's one-time algorithm search (static
    shapes)."""
    torch.set_num_threads(max(1, int(cfg.run.cpus_per_worker)))
    if device.type == "cpu":
        use_cpu_malloc(cfg.training.cpu_malloc)
        # Flush denormals (|x| < 1.2e-38) to zero: empty space's densities far below zero give exp() results that
        # small, and x86 computes with them ~2.5x slower (objects64 at 10 kimg: G's step 1.12 -> 0.46 s, docs/PERF.md).
        # A value that small changes no result that matters (the step-parity test passes with it).
        torch.set_flush_denormal(True)
    if device.type == "cuda":  # StyleGAN2-ADA does the same
        torch.backends.cudnn.benchmark = True


def real_micro_batches(batch, c_dim: int, batch_gpu: int, num_accum: int, device) -> list[Batch]:
    """A loader batch (uint8 images, angles, class ids) -> micro-batches of [-1, 1] images and one-hot labels."""
    images, angles, labels = batch
    images = images.to(device).float() / 127.5 - 1
    onehot = (torch.nn.functional.one_hot(labels, c_dim).float() if c_dim else torch.zeros(len(labels), 0)).to(device)
    return [Batch(i, a, c) for i, a, c in zip(images.split(batch_gpu), angles.to(device).split(batch_gpu),
                                              onehot.split(batch_gpu))][:num_accum]


def tick_row(cfg: ExperimentConfig, counters: Counters, means: dict, augment, device) -> dict:
    """A tick's row: counters, the phases' mean statistics, speed, the schedules' values, peak memory."""
    t, r, kimg = cfg.training, cfg.model.generator.render, counters.kimg
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"kimg": kimg, "tick": counters.tick, "step": counters.step, **means, "augment_p": float(augment.p),
            "patch_beta": schedules.patch_beta(kimg, t.patch), "patch_min_scale": schedules.patch_min_scale(kimg, t.patch),
            "blur_sigma": schedules.blur_sigma(counters.cur_nimg, t.blur_sigma, t.blur_fade_kimg),
            "density_noise": schedules.density_noise(kimg, r.density_noise_std, r.density_noise_kimg, counters.step),
            "peak_mem_gb": peak}


def report_tick(cfg, session, row: dict, modules, optimizers, counters, np_rng, last_metrics: dict, dataset_path: str,
                views: TrainedViews, main: Optional[str], checkpoint: bool, run_dir: Path,
                storage_uri: Optional[str]) -> dict:
    """Report a tick to the session (every rank), with a checkpoint when asked (rank 0; Ray Train ranks it by the
    main metric it was last measured at). A full disk is one line, not retried. Returns the numeric row."""
    ckpt_root = ckpt_dir = None
    numeric = {k: v for k, v in row.items() if isinstance(v, (int, float)) or k == "stop_reason"}
    try:
        if checkpoint:
            ckpt_root = checkpoint_tmpdir()
            ckpt_dir = write_checkpoint(ckpt_root / "ckpt", cfg, modules, optimizers, counters, capture_rng(np_rng),
                                        last_metrics, dataset_path, extra_state=views.stored())
            numeric["checkpoint"] = row["checkpoint"] = 1.0
        reported = dict(numeric)
        if ckpt_dir is not None and main in last_metrics:
            reported.setdefault(main, last_metrics[main])  # not a fresh value: what the checkpoint is ranked by
        session.report(reported, ckpt_dir)
    except Exception as e:
        if no_space(e) is None:
            raise
        raise storage_full(e, ckpt_root, run_dir if storage_uri is None else None) from None
    finally:
        if ckpt_root is not None:
            shutil.rmtree(ckpt_root, ignore_errors=True)  # the session has persisted (or moved) its copy
    return numeric
