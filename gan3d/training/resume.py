"""Where a training process starts: which checkpoint (the session's latest that reads, or training.resume),
what it loads from it, and every random stream it continues with. One seeding scheme, per rank and step."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from gan3d.config import ExperimentConfig
from gan3d.errors import CheckpointError
from gan3d.training import schedules
from gan3d.training.checkpoint import (Counters, LoadedCheckpoint, load_modules, newest_valid, read_checkpoint,
                                       stray_checkpoints)


def seed_streams(seed: int, rank: int, step: int) -> np.random.Generator:
    """The one seeding scheme of a training process: every random draw of a step (gan3d.draws) comes from torch's
    global generators (all devices) or the returned numpy Generator, both seeded from (seed, rank, step): ranks do
    not repeat each other's draws, and a resumed run does not replay those it made from step 0 (EDM2 / nanoGPT
    seed per rank). Network initialisation is seeded by `seed` alone, so every rank starts from the same weights."""
    seq = np.random.SeedSequence([seed, rank, step])
    torch.manual_seed(int(seq.generate_state(1)[0]))
    return np.random.default_rng(seq)


def capture_rng(np_rng: np.random.Generator) -> dict:
    """The random streams of a training process (training.resume.seed_streams): torch's global generators and numpy's."""
    state = {"torch": torch.get_rng_state(), "numpy": json.dumps(np_rng.bit_generator.state)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict, np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    np_rng.bit_generator.state = json.loads(state["numpy"])


@dataclass
class Start:
    counters: Counters
    np_rng: np.random.Generator
    latest: Optional[LoadedCheckpoint]  # the run's own checkpoint it continues (None: new, or training.resume)
    metrics: dict = field(default_factory=dict)  # the metrics that checkpoint was ranked by
    line: str = ""  # what the console says about it


def resume(cfg: ExperimentConfig, session, run_dir: Path, modules: dict, optimizers: dict, rank: int, world: int,
           say: Callable[[str], None], remove_strays: bool = True) -> Start:
    """Load where this process starts into `modules` and `optimizers`: the session's latest checkpoint (a damaged
    one: the newest that reads; a killed attempt's unregistered newer dirs are removed, said via `say`), else
    training.resume (fine-tuning loads G, D and G_ema only), else nothing. Then the random streams: rank 0 of a
    resumed run with as many workers continues its exact streams; any other process seeds them afresh for its
    (rank, step)."""
    t = cfg.training
    try:
        latest = session.load_latest()
        if latest is not None and rank == 0 and remove_strays:
            for stray in stray_checkpoints(run_dir, latest):
                shutil.rmtree(stray, ignore_errors=True)
                say(f"gan3d: removed {stray.name}: written by an earlier attempt after {latest.path.name}, never "
                    "registered")
    except CheckpointError:
        latest = newest_valid(run_dir)
        if latest is None:
            raise
    counters = Counters()
    if latest is not None:
        load_modules(latest, modules, optimizers)
        counters = latest.counters
    elif t.resume:
        start = read_checkpoint(t.resume)
        if t.resume_only_G:  # fine-tuning as the reference's train.py:283-286: G, D and G_ema; Adam, p, counters fresh
            load_modules(start, {k: modules[k] for k in ("G", "D", "G_ema")})
        else:
            load_modules(start, modules, optimizers)
            counters = start.counters
    np_rng = seed_streams(t.seed, rank, counters.step)
    if latest is not None and rank == 0 and world == latest.cfg.run.workers:
        restore_rng(latest.state["rng"], np_rng)
    now = f"patch beta {schedules.patch_beta(counters.kimg, t.patch):.4g}, ADA p {float(modules['augment'].p):.3g}"
    if latest is not None:
        line = f"gan3d: resuming from {latest.path.name} at kimg {counters.kimg:.3f} ({now})"
    elif t.resume:
        tune = " (fine-tuning: G, D, G_ema; fresh Adam, counters and p; no blur, ADA speed 100 kimg)"
        line = f"gan3d: starting from {t.resume}{tune if t.resume_only_G else ''} at kimg {counters.kimg:.3f} ({now})"
    else:
        line = "gan3d: new run"
    return Start(counters, np_rng, latest, dict(latest.metrics) if latest is not None else {}, line)
