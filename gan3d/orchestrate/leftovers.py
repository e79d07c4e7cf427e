"""What a killed driver's embedded Ray leaves running, found by this run's own record, never by process name.

`ray.init()` without an address starts a local cluster as children of the driver. When the driver is killed
with SIGKILL, Ray's dashboard (and its module processes) and the raylet's agents can outlive it as orphans of
PID 1, holding ports and memory. The driver writes the processes of the Ray it started (pid and start time,
so a reused pid is never mistaken for one of them) into the run dir; a rerun of the same run dir whose
recorded driver is gone stops those that are still alive.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import psutil

RECORD = ".ray_processes.json"


def _same(entry: dict) -> psutil.Process | None:
    """The live process the entry names, or None (gone, or its pid now belongs to another process)."""
    try:
        p = psutil.Process(entry["pid"])
        return p if abs(p.create_time() - entry["created"]) < 1e-3 else None
    except (psutil.Error, KeyError, TypeError):
        return None


def record_local_ray(owner_dir: Path) -> None:
    """Write the driver and the processes of the local Ray it just started (its descendants) to owner_dir."""
    me = psutil.Process()
    procs = []
    for p in me.children(recursive=True):
        try:
            procs.append({"pid": p.pid, "created": p.create_time()})
        except psutil.Error:
            continue
    tmp = owner_dir / f".{RECORD}.tmp"
    tmp.write_text(json.dumps({"driver": {"pid": me.pid, "created": me.create_time()}, "processes": procs}))
    os.replace(tmp, owner_dir / RECORD)


def stop_leftovers(owner_dir: Path, grace_s: float = 5.0) -> int:
    """Stop what the recorded earlier driver's Ray left running; returns how many processes were stopped.
    Nothing is touched while that driver still runs (another attempt of this run, e.g. in another shell)."""
    path = owner_dir / RECORD
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    if _same(rec.get("driver", {})) is not None:
        return 0
    alive = [p for p in (_same(e) for e in rec.get("processes", [])) if p is not None]
    for p in alive:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(alive, timeout=grace_s)
    for p in still:
        try:
            p.kill()
        except psutil.Error:
            pass
    path.unlink(missing_ok=True)
    return len(alive)
