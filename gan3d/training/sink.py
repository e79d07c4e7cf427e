"""What a run's ticks become on rank 0, and how they are summed on every rank.

`TickStats` owns a tick's sums and counts (kept on the device between ticks) and their mean over ranks. `Sink`
is rank 0's outlet: the console, the metrics table, the W&B run, the progress bar, sample media and the mirror
of a run stored in a bucket. Other ranks get `Sink.silent()`, whose every call does nothing, so the loop calls
its sink unconditionally (EDM2's print0, generalised).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from gan3d import config as config_mod
from gan3d.config import ExperimentConfig
from gan3d.metrics import to_uint8
from gan3d.render.views import TrainedViews
from gan3d.storage import RunMirror
from gan3d.track import media
from gan3d.track.store import MetricsStore
from gan3d.track.wandb_run import WandbRun, resolve_mode

SHOWN = ("kimg", "loss_G", "loss_D_real", "loss_D_fake", "r1_penalty", "sec_per_kimg", "augment_p", "swd")


def all_mean(values: dict, world: int, device: torch.device) -> dict[str, float]:
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


class TickStats:
    """Per-phase statistics of the steps of one tick: summed on the device, averaged over steps and ranks once per
    tick (one host transfer), with the tick's images and wall time."""

    def __init__(self, nimg: int):
        self.sums: dict = {}
        self.counts: dict[str, int] = {}
        self.start_nimg, self.start_time = nimg, time.time()

    def add(self, step_stats: dict[str, dict]) -> None:
        for stats in step_stats.values():
            for k, v in stats.items():
                self.sums[k], self.counts[k] = self.sums.get(k, 0.0) + v, self.counts.get(k, 0) + 1

    def close(self, nimg: int, world: int, device: torch.device) -> dict[str, float]:
        """The tick's means and its seconds per kimg; the next tick starts here."""
        means = all_mean({k: v / self.counts[k] for k, v in self.sums.items()}, world, device)
        means["sec_per_kimg"] = (time.time() - self.start_time) / max((nimg - self.start_nimg) / 1000, 1e-9)
        self.__init__(nimg)
        return means


class _Silent:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class Sink:
    """Rank 0's console, metrics table, W&B run, progress bar, sample media and bucket mirror."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path, session, storage_uri: Optional[str], console: bool):
        self.cfg, self.run_dir, self.session, self.console = cfg, run_dir, session, console
        self.mirror = RunMirror(run_dir, storage_uri) if storage_uri else None
        self.store = self.wandb = self.bar = None

    @staticmethod
    def silent():
        return _Silent()

    def say(self, text: str) -> None:
        if self.console:
            print(text, flush=True)

    def pull(self) -> None:
        """A restart on another node continues the table and the placement log from the bucket."""
        if self.mirror:
            self.mirror.pull([MetricsStore.FILE, "workers.jsonl"])

    def open(self, run_id: str, nimg: int, resumed: bool, views: TrainedViews, c_dim: int, device) -> None:
        """The metrics table, the W&B run (ticks a killed attempt's buffered run file lost are logged from the
        table), the progress bar, and the fixed latents and cameras of the sample media."""
        cfg = self.cfg
        self.store = MetricsStore(self.run_dir, resume_kimg=nimg / 1000)
        self.wandb = WandbRun(cfg, config_mod.to_dict(cfg), self.run_dir, run_id, resolve_mode(cfg.logging))
        lost = self.wandb.backfill(self.store.rows, self.run_dir) if resumed else []
        if lost:
            self.say(f"gan3d: W&B lacked {len(lost)} tick(s) of an earlier attempt (kimg {lost[0]:.3f}-{lost[-1]:.3f});"
                     " logged them from metrics.parquet")
        self.bar = self.session.progress(int(cfg.training.kimg * 1000), nimg)
        n, z_dim = cfg.logging.grid_size, cfg.model.generator.z_dim
        self.grid_z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(123)).to(device)
        self.grid_c = (torch.nn.functional.one_hot(torch.arange(n) % c_dim, c_dim).float().to(device) if c_dim else None)
        self.grid_angles = views.grid(n).to(device)
        self.video_angles = views.grid(cfg.logging.video_frames).to(device)

    def step(self, images: int) -> None:
        self.bar.update(images)

    def alert(self, reason: str) -> None:
        self.say(f"gan3d WARNING: training looks diverged: {reason}")
        self.wandb.alert("gan3d: training diverged", reason)

    def tick(self, row: dict, numeric: dict, tick: int, main: Optional[str]) -> None:
        """The tick's row into the table and W&B, one console line, and the bucket mirror brought up to date."""
        self.store.append(row)
        self.wandb.log({k: v for k, v in numeric.items() if k != "stop_reason"})
        eta = row["sec_per_kimg"] * max(self.cfg.training.kimg - row["kimg"], 0)
        shown = SHOWN + ((main,) if main and main not in SHOWN else ())
        self.say(f"tick {tick} eta {eta / 60:.1f}min " + " ".join(f"{k} {numeric[k]:.4g}" for k in shown if k in numeric))
        self.push()

    @torch.no_grad()
    def media(self, G_ema, kimg: float) -> None:
        """Fixed-seed sample grid (each latent from a different view) and a short orbit video of 4 latents."""
        imgs = G_ema(self.grid_z, self.grid_c, self.grid_angles, noise_mode="const")
        png = media.save_png(media.image_grid(to_uint8(imgs).cpu()), self.run_dir / "samples" / f"grid_{kimg:09.3f}.png")
        frames = media.orbit_frames(G_ema, self.grid_z[:4], self.grid_c[:4] if self.grid_c is not None else None,
                                    self.video_angles)
        gif = media.save_gif(frames, self.run_dir / "samples" / f"orbit_{kimg:09.3f}.gif")
        self.wandb.image("samples/grid", png, caption=f"kimg {kimg:.3f}")
        self.wandb.video("samples/orbit", gif, fps=10)

    def push(self) -> None:
        if self.mirror:
            self.mirror.push()

    def close(self, ok: bool) -> None:
        """The progress bar and the W&B run end (also on an error: then with exit code 1), the mirror last."""
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish(exit_code=0 if ok else 1)
        self.push()  # the W&B run's closing records
