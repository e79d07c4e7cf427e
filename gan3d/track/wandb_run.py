"""W&B on rank 0 with plain `wandb.init` (Ray's setup_wandb gives every V2 rank a live run: RAY_NOTES.md).

Offline unless the user configured W&B online (WANDB_MODE, WANDB_API_KEY or a netrc entry), since no
network at run time is the normal case. kimg is the x axis of every metric (define_metric).
"""
from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Optional

from gan3d.config import ExperimentConfig, LoggingConfig


def resolve_mode(cfg: LoggingConfig) -> str:
    if not cfg.wandb:
        return "disabled"
    if cfg.wandb_mode:
        return cfg.wandb_mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


def log_job(job_type: str, out_dir: str | Path, config: dict, rows: list[dict]) -> None:
    """One W&B run for a job outside training (an inversion batch): a history row per item, a Path value logged
    as an image captioned by the row's `caption`. Offline unless W&B is configured online."""
    mode = resolve_mode(LoggingConfig())
    if mode == "disabled":
        return
    import wandb

    run = wandb.init(project=LoggingConfig().project, job_type=job_type, dir=str(out_dir), config=config, mode=mode)
    for row in rows:
        caption = row.get("caption", "")
        run.log({k: wandb.Image(str(v), caption=caption) if isinstance(v, Path) else v
                 for k, v in row.items() if k != "caption"})
    run.finish()


def logged_kimg(run_dir: Path) -> set[float]:
    """kimg of every history row in the run dir's W&B files, every attempt's (rounded to 1e-6)."""
    from gan3d.track.wandb_reader import history

    kimgs: set[float] = set()
    for path in Path(run_dir).glob("wandb/*run-*/run-*.wandb"):
        try:
            kimgs.update(round(float(row["kimg"]), 6) for row in history(path) if "kimg" in row)
        except Exception:  # noqa: BLE001 - a torn file from a killed attempt: what it holds is unknown, skip it
            continue
    return kimgs


class WandbRun:
    """A thin holder of the rank-0 run; every method is a no-op when W&B is disabled."""

    def __init__(self, cfg: ExperimentConfig, cfg_dict: dict, run_dir: Path, run_id: str, mode: str):
        self.run = None
        if mode == "disabled":
            return
        import wandb

        lg = cfg.logging
        os.environ.setdefault("WANDB_SILENT", "true")
        kwargs = dict(project=lg.project, entity=lg.entity or None, group=lg.group or None, tags=list(lg.tags) or None,
                      name=cfg.run.name or None, resume="allow", dir=str(run_dir), mode=mode,
                      config={**cfg_dict, "run_dir": str(run_dir)})
        # W&B must never stop training: after a killed driver the old run id can still be held by an orphaned
        # W&B service ("run ID ... is in use"); then log to a fresh id in the same group, else go without W&B
        # (metrics.parquet has every scalar either way).
        for attempt, rid in enumerate((run_id, f"{run_id}-{os.getpid()}")):
            try:
                self.run = wandb.init(id=rid, **kwargs)
                break
            except Exception as e:  # wandb raises several types (ServerResponseError, CommError, UsageError)
                print(f"gan3d WARNING: wandb.init(id={rid}) failed ({type(e).__name__}: {str(e)[:200]})"
                      + ("; retrying with a new run id" if attempt == 0 else "; continuing without W&B"), flush=True)
        if self.run is None:
            return
        self.run.define_metric("kimg")
        self.run.define_metric("*", step_metric="kimg")

    def backfill(self, rows: list[dict], run_dir: Path) -> list[float]:
        """Log the rows of metrics.parquet that no W&B file of this run holds; returns their kimg.

        W&B's service buffers its run file and loses it when the process is killed with SIGKILL (an offline
        run file stays at its 7-byte header), so a resumed run would miss the killed attempt's ticks. The
        Parquet table is written atomically every tick: it is the record, W&B is filled from it, once.
        Only this run dir's files are read, so ticks logged by an attempt on another node are logged again.
        """
        if self.run is None:
            return []
        have = logged_kimg(run_dir)
        missing = [r for r in rows if "kimg" in r and round(float(r["kimg"]), 6) not in have]
        for r in missing:
            self.run.log({k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        return [float(r["kimg"]) for r in missing]

    def log(self, data: dict) -> None:
        if self.run is not None:
            self.run.log(data)

    def image(self, key: str, path: Path, caption: str = "") -> None:
        if self.run is not None:
            import wandb
            self.run.log({key: wandb.Image(str(path), caption=caption)}, commit=False)

    def video(self, key: str, path: Path, fps: int) -> None:
        if self.run is not None:
            import wandb
            self.run.log({key: wandb.Video(str(path), fps=fps, format=Path(path).suffix[1:])}, commit=False)

    def alert(self, title: str, text: str) -> None:
        if self.run is not None:
            try:
                self.run.alert(title=title, text=text)
            except Exception:  # offline runs cannot page anyone; the warning line is printed anyway
                pass

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None

    @property
    def dir(self) -> Optional[str]:
        return self.run.dir if self.run is not None else None
