"""The SLURM script, run for real on this machine: `srun` and `scontrol` are stand-ins that run each step
locally in its own process group and end the whole group on SIGTERM (what SLURM's step cleanup does). The
script starts a token-auth Ray head on its job's own ports and temp dir, runs a one-trial gan3d sweep
against it, and on exit ends only the processes of its own steps.

It shuts the session's shared local Ray down first, as tests/test_multinode.py does (any order)."""
import os
import random
import shutil
import socket
import stat
import subprocess
import time

import psutil
import yaml

import pyarrow.parquet as pq
from conftest import ROOT
import pytest

pytestmark = pytest.mark.slow  # Ray clusters and real training runs: `pytest -m 'not slow'` skips them

SRUN = """#!/bin/bash
# stand-in for srun: drop the options, run the step locally in its own session; SIGTERM ends the whole step
while [[ $# -gt 0 && $1 == -* ]]; do [[ $1 == -w ]] && shift; shift; done
setsid "$@" & step=$!
trap 'kill -TERM -- -$step 2>/dev/null; sleep 3; kill -KILL -- -$step 2>/dev/null; exit 143' TERM INT
wait $step
"""
SCONTROL = "#!/bin/bash\necho localhost\n"  # `scontrol show hostnames ...`: a one-node allocation


def _free_block(n: int = 4) -> int:
    """A job id whose 4-port block (the script's formula) is free on this machine."""
    for _ in range(200):
        job = random.randrange(1, 10**6)
        port = 20000 + job % 2500 * 4
        try:
            for p in range(port, port + n):
                with socket.socket() as s:
                    s.bind(("", p))
            return job
        except OSError:
            continue
    raise RuntimeError("no free port block")


def _ours(tmp: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(tmp in a for a in (p.info["cmdline"] or [])):
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_slurm_script_runs_a_sweep_on_its_own_ray_and_tears_down_only_that(tmp_path):
    import ray

    ray.shutdown()  # the shared local Ray, if running: see the module docstring
    script = ROOT / "cluster" / "slurm" / "gan3d-sweep.sbatch"
    commands = [ln for ln in script.read_text().splitlines() if not ln.lstrip().startswith("#")]
    assert not any("ray stop" in ln for ln in commands)  # it would stop every Ray on a shared node
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    sweep = tmp_path / "one.yaml"
    sweep.write_text(yaml.safe_dump({
        "experiment": str(ROOT / "experiments" / "smoke.yaml"), "metric": "swd", "mode": "min", "name": "slurm",
        "overrides": ["training.kimg=0.032", "training.tick_kimg=0.016", "training.snap_kimg=0.032",
                      "training.metric_kimg=0.032", "training.image_kimg=1", "metrics.num_fakes=16",
                      "dataset.synthetic_size=48", "logging.grid_size=4", "logging.video_frames=2"],
        "space": {"training.gamma": {"grid": [0.1]}}, "resources": {"workers": 1, "cpus_per_worker": 1}}))
    job = _free_block()
    ray_tmp = f"/tmp/g3s{job}"  # short: Ray's unix socket paths live under it
    bystander = subprocess.Popen(["sleep", "300"])  # another job's process on the same node: untouched
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": str(job),
           "SLURM_JOB_NODELIST": "localhost", "SLURM_CPUS_PER_TASK": "2", "SLURM_GPUS_PER_NODE": "0",
           "GAN3D_RAY_TMP": ray_tmp, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        env.pop(k, None)
    try:
        res = subprocess.run(["bash", str(script), str(sweep), f"out={tmp_path / 'sweeps'}"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
        out = res.stdout + res.stderr
        assert res.returncode == 0, out[-4000:]
        assert "gan3d: Ray head on localhost" in out and f":{20000 + job % 2500 * 4}), 1 node(s)" in out
        assert "gan3d: 1 node(s) alive" in out
        trials = pq.read_table(tmp_path / "sweeps" / "slurm" / "trials.parquet").to_pylist()
        assert [t["status"] for t in trials] == ["TERMINATED"]
        assert not (tmp_path / f".ray-token-{job}").exists()  # the job's token is removed
        deadline = time.time() + 30
        while _ours(ray_tmp) and time.time() < deadline:
            time.sleep(1)
        assert not _ours(ray_tmp), [p.info["cmdline"][:2] for p in _ours(ray_tmp)]
        assert bystander.poll() is None
    finally:
        bystander.kill()
        for p in _ours(ray_tmp):
            p.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
