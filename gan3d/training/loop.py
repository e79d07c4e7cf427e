"""The per-worker training loop: one function split by one-line section comments (after NVlabs EDM2).
Resume = rerun: the loop starts from the session's latest checkpoint when there is one."""
from __future__ import annotations

import copy
import math
import resource
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from gan3d import config as config_mod
from gan3d.config import ExperimentConfig
from gan3d.data.dataset import open_dataset, real_batches, resolve_labels
from gan3d.metrics import evaluate, main_metric
from gan3d.metrics.inception import weights_path
from gan3d.nn import build_discriminator, build_generator, prepare_for_training
from gan3d.render.views import TrainedViews, subsample
from gan3d.training import schedules
from gan3d.training.allocator import use_cpu_malloc
from gan3d.training.augment import AdaStatistic, AugmentPipe
from gan3d.errors import CheckpointError, no_space
from gan3d.training.checkpoint import (Counters, capture_rng, load_modules, newest_valid, read_checkpoint, restore_rng,
                                      storage_full, stray_checkpoints, write_checkpoint)
from gan3d.training.health import HealthMonitor
from gan3d.draws import RandomDraws
from gan3d.training.phases import Batch, GanParts, PosePool, Progress, make_optimizers, make_phases, training_step
from gan3d.training.session import checkpoint_tmpdir, record_placement
from gan3d.track import media
from gan3d.storage import RunMirror
from gan3d.track.store import MetricsStore
from gan3d.track.wandb_run import WandbRun, resolve_mode


def needs_poses(cfg: ExperimentConfig) -> bool:
    return (cfg.dataset.camera.dist == "dataset" or cfg.model.generator.camera_cond
            or cfg.model.discriminator.camera_cond)


def _crossed(prev_nimg: int, cur_nimg: int, interval_kimg: float) -> bool:
    step = interval_kimg * 1000
    return math.floor(cur_nimg / step) > math.floor(prev_nimg / step)


class _Nothing:
    """Rank 0's metrics store, W&B run, progress bar and storage mirror on the other ranks: every call does
    nothing, so the loop calls them unconditionally."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


STOP_POLL_STEPS = 16  # the driver's stop flag is asked at ticks and every this many steps (a few seconds)


def _all_mean(values: dict, world: int, device: torch.device) -> dict[str, float]:
    """Mean over ranks of per-rank scalars (floats or 0-dim tensors; keys in sorted order on every rank), read
    back to the host in one transfer; on `device`, since NCCL only reduces CUDA tensors."""
    if not values:
        return {}
    keys = sorted(values)
    t = torch.stack([torch.as_tensor(values[k], dtype=torch.float64, device=device) for k in keys])
    if world > 1:
        dist.all_reduce(t)
        t /= world
    return dict(zip(keys, t.tolist()))


def seed_streams(seed: int, rank: int, step: int) -> np.random.Generator:
    """The one seeding scheme of a training process: every random draw of a step (gan3d.draws) comes from torch's
    global generators (all devices) or the returned numpy Generator, both seeded from (seed, rank, step): ranks do
    not repeat each other's draws, and a resumed run does not replay those it made from step 0 (EDM2 / nanoGPT
    seed per rank). Network initialisation is seeded by `seed` alone, so every rank starts from the same weights."""
    seq = np.random.SeedSequence([seed, rank, step])
    torch.manual_seed(int(seq.generate_state(1)[0]))
    return np.random.default_rng(seq)


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


def training_loop(cfg: ExperimentConfig, run_dir: str | Path, session, dataset_path: str, run_id: str,
                  storage_uri: Optional[str] = None, console: bool = True) -> dict:
    """Train until cfg.training.kimg (or a stop request / divergence); returns the last tick's row.
    With `storage_uri`, run_dir is a local working directory that rank 0 mirrors there after every tick.
    `console=False` (sweep trials) keeps the run's lines off stdout: the sweep prints its own table."""
    # Setup.
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t = cfg.training
    rank, world, device = session.rank, session.world, session.device
    torch.set_num_threads(max(1, int(cfg.run.cpus_per_worker)))
    if device.type == "cpu":  # freed tensors' pages reused instead of faulted in again every step
        use_cpu_malloc(t.cpu_malloc)
    if device.type == "cuda":  # static shapes: cuDNN times its algorithms once (StyleGAN2-ADA does the same)
        torch.backends.cudnn.benchmark = True
    batch_per_worker = t.batch // world
    batch_gpu = t.batch_gpu or batch_per_worker
    num_accum = max(1, batch_per_worker // batch_gpu)

    # Data.
    dataset = open_dataset(dataset_path, cfg.dataset.resolution, cfg.dataset.mirror, cfg.dataset.use_labels,
                           needs_poses(cfg), cfg.dataset.max_size)
    cfg, _ = resolve_labels(cfg, dataset, dataset_path)  # the driver said its notes; a direct call settles c_dim
    c_dim = cfg.dataset.c_dim if cfg.dataset.use_labels else 0
    pool = pose_pool(dataset, c_dim)
    views = trained_views(cfg, pool)

    # Networks: identical initial weights on every rank (same seed), then rank-specific randomness.
    torch.manual_seed(t.seed)
    G = build_generator(cfg).to(device).train().requires_grad_(False)
    D = build_discriminator(cfg).to(device).train().requires_grad_(False)
    G_ema = copy.deepcopy(G).eval()
    prepare_for_training(cfg, G, D, batch_gpu)
    augment = AugmentPipe(t.augment.kind, t.augment.p, t.augment.target, t.augment.speed_kimg).to(device)
    optimizers = make_optimizers(cfg, G, D)
    modules = {"G": G, "D": D, "G_ema": G_ema, "augment": augment}

    # Resume: the session's latest checkpoint wins; training.resume starts from a given one.
    counters = Counters()
    try:
        latest = session.load_latest()
        if latest is not None and rank == 0 and storage_uri is None:  # a killed attempt's unregistered dirs
            for stray in stray_checkpoints(run_dir, latest):
                shutil.rmtree(stray, ignore_errors=True)
                console and print(f"gan3d: removed {stray.name}: written by an earlier attempt after {latest.path.name}, "
                      "never registered", flush=True)
    except CheckpointError:  # a damaged newest checkpoint: resume from the newest one that reads
        latest = newest_valid(run_dir)
        if latest is None:
            raise
    if latest is not None:
        load_modules(latest, modules, optimizers)
        counters = latest.counters
    elif t.resume:
        start = read_checkpoint(t.resume)
        if t.resume_only_G:  # fine-tuning as the reference's train.py:283-286: G, D and G_ema; Adam, p, counters fresh
            load_modules(start, {"G": G, "D": D, "G_ema": G_ema})
        else:
            load_modules(start, modules, optimizers)
            counters = start.counters
    np_rng = seed_streams(t.seed, rank, counters.step)
    if latest is not None and rank == 0 and world == latest.cfg.run.workers:
        restore_rng(latest.state["rng"], np_rng)  # rank 0 continues its exact streams
    last_metrics: dict[str, float] = dict(latest.metrics) if latest is not None else {}
    parts = GanParts(cfg, G, D, augment, RandomDraws(np_rng), pool, G_ema)
    phases = make_phases(t)

    print0 = (lambda *a: print(*a, flush=True)) if rank == 0 and console else (lambda *a: None)  # EDM2's print0
    mirror = RunMirror(run_dir, storage_uri) if storage_uri and rank == 0 else _Nothing()
    mirror.pull([MetricsStore.FILE, "workers.jsonl"])  # a restart on another node continues the table and log
    record_placement(session, run_dir, counters.kimg)
    schedules_now = f"patch beta {schedules.patch_beta(counters.kimg, t.patch):.4g}, ADA p {float(augment.p):.3g}"
    if latest is not None:
        print0(f"gan3d: resuming from {latest.path.name} at kimg {counters.kimg:.3f} ({schedules_now})")
    elif t.resume:
        tune = " (fine-tuning: G, D, G_ema; fresh Adam, counters and p; no blur, ADA speed 100 kimg)"
        print0(f"gan3d: starting from {t.resume}{tune if t.resume_only_G else ''} at kimg "
               f"{counters.kimg:.3f} ({schedules_now})")
    else:
        print0("gan3d: new run")

    if counters.cur_nimg >= t.kimg * 1000:  # a rerun of a finished run has nothing left to do (and logs nothing)
        return {"kimg": counters.kimg, "stop_reason": "done", **last_metrics}

    # Logging (rank 0 only).
    cfg_dict = config_mod.to_dict(cfg)
    metric_names = list(cfg.metrics.metrics)
    main = main_metric(metric_names, weights_path(cfg.metrics.inception_weights) is not None)
    store = wandb = bar = _Nothing()
    if rank == 0:
        store = MetricsStore(run_dir, resume_kimg=counters.kimg)
        wandb = WandbRun(cfg, cfg_dict, run_dir, run_id, resolve_mode(cfg.logging))
        lost = wandb.backfill(store.rows, run_dir) if latest is not None else []
        if lost:
            print0(f"gan3d: W&B lacked {len(lost)} tick(s) of an earlier attempt (kimg {lost[0]:.3f}-{lost[-1]:.3f});"
                   " logged them from metrics.parquet")
        bar = session.progress(int(t.kimg * 1000), counters.cur_nimg)
        grid_gen = torch.Generator().manual_seed(123)
        grid_z = torch.randn(cfg.logging.grid_size, G.cfg.z_dim, generator=grid_gen).to(device)
        grid_c = (torch.nn.functional.one_hot(torch.arange(cfg.logging.grid_size) % c_dim, c_dim).float().to(device)
                  if c_dim else None)
        grid_angles = views.grid(cfg.logging.grid_size).to(device)
        video_angles = views.grid(cfg.logging.video_frames).to(device)
    health = HealthMonitor()
    if latest is not None and main in latest.metrics:
        health.best_swd = latest.metrics.get("swd", math.inf)

    # Main loop.
    dataset_size = max(len(dataset), 1)
    batches = real_batches(dataset, batch_per_worker, rank, world, t.seed, num_workers=0,
                           start_epoch=counters.epoch)
    tick_start_nimg, tick_start_time = counters.cur_nimg, time.time()
    sums: dict = {}
    counts: dict[str, int] = {}
    ada = AdaStatistic()
    row: dict = {}
    reason = None
    try:
        while True:
            # Fetch reals: uint8 -> [-1, 1], labels one-hot, split into micro-batches.
            images, angles, labels = next(batches)
            images = images.to(device).float() / 127.5 - 1
            onehot = (torch.nn.functional.one_hot(labels, c_dim).float() if c_dim else torch.zeros(len(labels), 0)).to(device)
            micro = [Batch(i, a, c) for i, a, c in zip(images.split(batch_gpu), angles.to(device).split(batch_gpu),
                                                       onehot.split(batch_gpu))][:num_accum]

            # GAN phases and G_ema.
            step_stats = training_step(parts, phases, optimizers, micro, Progress(counters.cur_nimg, counters.step))
            for stats in step_stats.values():
                for k, v in stats.items():  # stays on the device until the tick
                    sums[k], counts[k] = sums.get(k, 0.0) + v, counts.get(k, 0) + 1
            ada.observe(step_stats)

            # The ADA probability: r_t = E[sign(D(real))] over the last interval moves p by the images of that interval.
            if t.augment.kind == "ada" and (counters.step + 1) % t.augment.interval == 0:
                r = ada.take()
                if r is not None:
                    augment.update(_all_mean({"r": r}, world, device)["r"], t.batch * t.augment.interval)

            # Counters and the stop/tick decisions (identical on every rank).
            counters.cur_nimg += t.batch
            counters.step += 1
            counters.epoch = counters.cur_nimg // dataset_size
            bar.update(t.batch)
            done = counters.cur_nimg >= t.kimg * 1000
            tick_due = counters.cur_nimg >= tick_start_nimg + t.tick_kimg * 1000
            stop = (done or tick_due or counters.step % STOP_POLL_STEPS == 0) and session.should_stop()
            if not (done or stop or tick_due):
                continue

            # Tick statistics.
            now = time.time()
            means = _all_mean({k: v / counts[k] for k, v in sums.items()}, world, device)
            counters.tick += 1
            peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
            kimg = counters.kimg
            row = {"kimg": kimg, "tick": counters.tick, "step": counters.step, **means,
                   "sec_per_kimg": (now - tick_start_time) / max((counters.cur_nimg - tick_start_nimg) / 1000, 1e-9),
                   "augment_p": float(augment.p), "patch_beta": schedules.patch_beta(kimg, t.patch),
                   "patch_min_scale": schedules.patch_min_scale(kimg, t.patch),
                   "blur_sigma": schedules.blur_sigma(counters.cur_nimg, t.blur_sigma, t.blur_fade_kimg),
                   "density_noise": schedules.density_noise(kimg, cfg.model.generator.render.density_noise_std,
                                                            cfg.model.generator.render.density_noise_kimg, counters.step),
                   "peak_mem_gb": peak}
            sums, counts = {}, {}

            # Metrics, samples and health (rank 0).
            snapshot = done or stop or _crossed(tick_start_nimg, counters.cur_nimg, t.snap_kimg)
            if rank == 0:
                first_snapshot_unranked = snapshot and main is not None and main not in last_metrics
                if metric_names and (done or first_snapshot_unranked
                                     or _crossed(tick_start_nimg, counters.cur_nimg, t.metric_kimg)):
                    values, protocols = evaluate(G_ema, dataset, cfg, metric_names, device, seed=t.seed,
                                                 dataset_id=dataset_path)
                    last_metrics.update(values)
                    row.update(values)
                    row["metric_protocols"] = str(protocols)
                if done or _crossed(tick_start_nimg, counters.cur_nimg, t.image_kimg):
                    _log_media(G_ema, grid_z, grid_c, grid_angles, video_angles, run_dir, kimg, wandb)
                reason = health.check(row)
                if reason:
                    print0(f"gan3d WARNING: training looks diverged: {reason}")
                    wandb.alert("gan3d: training diverged", reason)
            diverged = _all_mean({"d": float(reason is not None)}, world, device)["d"] > 0
            row["diverged"] = float(diverged)
            halt = diverged and t.stop_on_divergence
            row["stop_reason"] = "done" if done else "user" if stop else "diverged" if halt else ""

            # Checkpoint and report (every rank reports; rank 0 with the checkpoint). A full disk is not retried.
            ckpt_root = ckpt_dir = None
            numeric = {k: v for k, v in row.items() if isinstance(v, (int, float)) or k == "stop_reason"}
            try:
                if rank == 0 and (snapshot or halt):
                    ckpt_root = checkpoint_tmpdir()
                    ckpt_dir = write_checkpoint(ckpt_root / "ckpt", cfg, modules, optimizers, counters,
                                                capture_rng(np_rng), last_metrics, dataset_path,
                                                extra_state=views.stored())
                    numeric["checkpoint"] = row["checkpoint"] = 1.0
                reported = dict(numeric)
                if ckpt_dir is not None and main in last_metrics:
                    reported.setdefault(main, last_metrics[main])  # Train ranks checkpoints by it; not a fresh value
                session.report(reported, ckpt_dir)
            except Exception as e:
                if no_space(e) is None:
                    raise
                raise storage_full(e, ckpt_root, run_dir if storage_uri is None else None) from None
            finally:
                if ckpt_root is not None:
                    shutil.rmtree(ckpt_root, ignore_errors=True)  # the session has persisted (or moved) its copy
            store.append(row)
            wandb.log({k: v for k, v in numeric.items() if k != "stop_reason"})
            eta = row["sec_per_kimg"] * max(t.kimg - kimg, 0)
            shown = ("kimg", "loss_G", "loss_D_real", "loss_D_fake", "r1_penalty", "sec_per_kimg", "augment_p", "swd")
            shown += (main,) if main and main not in shown else ()
            print0(f"tick {counters.tick} eta {eta / 60:.1f}min " + " ".join(
                f"{k} {numeric[k]:.4g}" for k in shown if k in numeric))
            mirror.push()
            tick_start_nimg, tick_start_time = counters.cur_nimg, time.time()
            if done or stop or halt:
                break

    except BaseException:  # bad data, a full disk, Ctrl-C: the W&B run and the progress bar end too
        bar.close()
        wandb.finish(exit_code=1)
        raise
    # Done.
    bar.close()
    wandb.finish(exit_code=0 if row.get("stop_reason") == "done" else 1)
    mirror.push()  # the W&B run's closing records
    return row


@torch.no_grad()
def _log_media(G_ema, grid_z, grid_c, grid_angles, video_angles, run_dir: Path, kimg: float, wandb) -> None:
    """Fixed-seed sample grid (each latent from a different view) and a short orbit video of 4 latents."""
    imgs = G_ema(grid_z, grid_c, grid_angles, noise_mode="const")
    grid = media.image_grid((imgs * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu())
    png = media.save_png(grid, run_dir / "samples" / f"grid_{kimg:09.3f}.png")
    frames = media.orbit_frames(G_ema, grid_z[:4], grid_c[:4] if grid_c is not None else None, video_angles)
    gif = media.save_gif(frames, run_dir / "samples" / f"orbit_{kimg:09.3f}.gif")
    wandb.image("samples/grid", png, caption=f"kimg {kimg:.3f}")
    wandb.video("samples/orbit", gif, fps=10)
