"""Where the training loop runs: under Ray Train (RaySession) or directly in this process (LocalSession,
used by `gan3d bench` and to measure Ray's overhead). The loop only talks to this small interface."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
import tempfile
from pathlib import Path
from typing import Optional, Protocol

import torch
import torch.distributed as dist

from gan3d.training.checkpoint import LoadedCheckpoint, read_checkpoint
from gan3d.training.stop import FatalError, StopFlagClient


class Session(Protocol):
    """All the training loop knows of where it runs (the seam that keeps Ray out of it)."""

    rank: int  # this process's rank among `world`
    world: int
    device: torch.device

    def load_latest(self) -> Optional[LoadedCheckpoint]:
        """The session's newest checkpoint (a restarted worker group's, a rerun's), or None for a new run."""

    def report(self, metrics: dict, checkpoint_dir: Optional[Path] = None) -> None:
        """A tick's numbers, and on rank 0 optionally a checkpoint directory the session takes over."""

    def should_stop(self) -> bool:
        """A graceful stop was asked for (Ctrl-C or SIGTERM at the driver); the same answer on every rank."""

    def placement(self) -> dict:
        """Where this rank runs (host, pid, device; node on Ray), for workers.jsonl."""

    def progress(self, total: float, initial: float):
        """A progress bar with update(n) and close()."""


class LocalSession:
    """One process, no Ray: checkpoints in run_dir/checkpoints/, SIGINT/SIGTERM request a graceful stop."""

    rank, world = 0, 1

    def __init__(self, run_dir: str | Path, device: str = "cpu", handle_signals: bool = False):
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self._stop = False
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._on_signal)

    def _on_signal(self, *_):
        self._stop = True

    def load_latest(self) -> Optional[LoadedCheckpoint]:
        pointer = self.run_dir / "checkpoints" / "latest.json"
        if not pointer.is_file():
            return None
        return read_checkpoint(self.run_dir / "checkpoints" / json.loads(pointer.read_text())["name"])

    def report(self, metrics: dict, checkpoint_dir: Optional[Path] = None) -> None:
        if checkpoint_dir is not None:
            dest = self.run_dir / "checkpoints" / f"checkpoint_{metrics['kimg']:010.3f}"
            if dest.exists():
                shutil.rmtree(dest)
            shutil.move(str(checkpoint_dir), dest)
            tmp = dest.parent / ".latest.json.tmp"
            tmp.write_text(json.dumps({"name": dest.name}))
            tmp.replace(dest.parent / "latest.json")

    def should_stop(self) -> bool:
        return self._stop

    def placement(self) -> dict:
        return {"rank": 0, "host": socket.gethostname(), "pid": os.getpid(), "device": str(self.device)}

    def progress(self, total: float, initial: float):
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, unit="img", unit_scale=True, dynamic_ncols=True)


class RaySession:
    """Inside `ray.train.torch.TorchTrainer`: ranks from the Train context, checkpoints through
    `ray.train.report` (rank 0 passes the directory, others None), stop requests from a named actor."""

    def __init__(self, run_name: str, progress_bar: bool = False):
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self._stop = StopFlagClient(run_name)
        self._progress_bar = progress_bar

    def load_latest(self) -> Optional[LoadedCheckpoint]:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:  # read fully while the directory exists
            loaded = read_checkpoint(d)
        loaded.path = Path(ckpt.path)  # where it lives, for the resume line (not the temporary copy)
        return loaded

    def report(self, metrics: dict, checkpoint_dir: Optional[Path] = None) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
        ray.train.report(metrics, checkpoint=ckpt)

    def placement(self) -> dict:
        import ray

        return {"rank": self.rank, "node_id": ray.get_runtime_context().get_node_id(),
                "node_ip": ray.util.get_node_ip_address(), "host": socket.gethostname(), "pid": os.getpid(),
                "device": str(self.device)}

    def fatal_error(self) -> Optional[FatalError]:
        """The error an earlier attempt of this run hit that no restart can fix (bad data, config, checkpoint)."""
        return self._stop.error()

    def report_fatal(self, error: Exception) -> bool:
        """Tell the driver; False when there is no driver flag to tell (a sweep trial, a submitted job)."""
        return self._stop.fail(error)

    def should_stop(self) -> bool:
        """Rank 0 asks the driver's stop flag; the answer is broadcast so every rank stops at the same step."""
        flag = torch.zeros(1, device=self.device)  # NCCL broadcasts CUDA tensors only
        if self.rank == 0:
            flag[0] = float(self._stop.is_set())
        if self.world > 1 and dist.is_initialized():
            dist.broadcast(flag, src=0)
        return bool(flag[0])

    def progress(self, total: float, initial: float):
        if not self._progress_bar:  # logs and CI: the tick lines carry kimg, ETA and losses
            return _NoBar()
        try:
            from ray.experimental.tqdm_ray import tqdm
            bar = tqdm(total=total, desc="images")
            bar.update(initial)
            return bar
        except Exception:
            from tqdm import tqdm
            return tqdm(total=total, initial=initial, unit="img", unit_scale=True)


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def checkpoint_tmpdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="gan3d-ckpt-"))


def record_placement(session, run_dir: Path, kimg: float) -> list[dict]:
    """Every rank's placement (node, pid, device), gathered on rank 0 and appended to run_dir/workers.jsonl:
    one line per (re)start, so a restart after a lost node shows where the run went on."""
    mine = session.placement()
    everyone = [mine]
    if session.world > 1 and dist.is_initialized():
        everyone = [None] * session.world
        dist.all_gather_object(everyone, mine)
    if session.rank == 0:
        line = {"time": time.time(), "kimg": kimg, "world": session.world, "workers": everyone}
        with open(Path(run_dir) / "workers.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        nodes = {w.get("node_id", w["host"]) for w in everyone}
        print(f"gan3d: {session.world} worker(s) on {len(nodes)} node(s) at kimg {kimg:.3f}", flush=True)
    return everyone
