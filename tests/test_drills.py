"""Hostile-operator drills on real processes: Ctrl-C to a driver's process group (as a terminal sends it) or its
pid, two drivers on one run directory, a disk that fills up while a checkpoint is written."""
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from gan3d.track.wandb_reader import find_run_file, history
from gan3d.training.checkpoint import CheckpointError, list_candidates, read_checkpoint
from conftest import SMOKE, TINY

pytestmark = pytest.mark.slow  # Ray clusters and real training runs: `pytest -m 'not slow'` skips them

LONG = [*TINY, "training.kimg=50", "training.snap_kimg=100", "training.metric_kimg=100", "training.image_kimg=100"]


def _driver(one_node_ray, tmp_path, name, *extra):
    """`gan3d train` in a process group of its own (as a shell runs a foreground job), joined to the session's Ray."""
    address = one_node_ray.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "gan3d.cli", "train", str(SMOKE), *LONG, *extra, "--out", str(tmp_path),
           "--name", name, "--address", address]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _until(proc, needle: str, timeout: float = 240) -> list[str]:
    """Lines of `proc` up to the first holding `needle` (fails with what was seen if it never comes)."""
    lines, deadline = [], time.time() + timeout
    for line in proc.stdout:
        lines.append(line)
        if needle in line:
            return lines
        assert time.time() < deadline, "".join(lines)[-3000:]
    raise AssertionError(f"ended before {needle!r}:\n" + "".join(lines)[-3000:])


@pytest.mark.parametrize("target", ["process group", "pid"])
def test_ctrl_c_finishes_the_step_writes_a_checkpoint_and_exits_130(one_node_ray, tmp_path, target):
    proc = _driver(one_node_ray, tmp_path, "interrupted")
    lines = _until(proc, "tick 1 ")
    if target == "process group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=180)
    text = "".join(lines) + out
    assert proc.returncode == 130, text[-3000:]
    assert "stopping after the current step" in text and "stopped on request; checkpoint written" in text
    ckpts = [p for p in list_candidates(tmp_path / "interrupted")]
    assert ckpts and 0 < read_checkpoint(ckpts[-1]).counters.kimg < 50
    ticks = history(find_run_file(tmp_path / "interrupted"))  # the W&B run got its ticks, not 0
    assert len([r for r in ticks if "kimg" in r]) >= 1


def test_a_second_driver_on_a_run_is_refused_naming_the_first_and_a_dead_one_blocks_nothing(one_node_ray, tmp_path):
    first = _driver(one_node_ray, tmp_path, "shared")
    lines = _until(first, "tick 1 ")
    second = _driver(one_node_ray, tmp_path, "shared")
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 2, out[-3000:]
    assert f"in use by another gan3d driver (pid {first.pid} on " in out and len(out.strip().splitlines()) == 1
    first.send_signal(signal.SIGTERM)  # the first goes on as if nothing happened, and stops cleanly
    rest, _ = first.communicate(timeout=180)
    assert first.returncode == 130, ("".join(lines) + rest)[-3000:]
    crashed = _driver(one_node_ray, tmp_path, "shared")  # a driver killed outright leaves its lock to the kernel
    _until(crashed, "gan3d: run ")
    os.killpg(crashed.pid, signal.SIGKILL)
    crashed.wait()
    after = _driver(one_node_ray, tmp_path, "shared")  # takes the lock: its run line comes after the lock is held
    seen = _until(after, "gan3d: run ")
    os.killpg(after.pid, signal.SIGKILL)
    after.wait()
    assert not any("in use by another" in line for line in seen), "".join(seen)[-3000:]


def _whole(run_dir: Path) -> bool:
    for ckpt in list_candidates(run_dir):
        try:
            read_checkpoint(ckpt)
        except CheckpointError:
            return False
    return True


def test_a_full_disk_is_one_line_exit_2_not_retried_and_leaves_no_partial_checkpoint(one_node_ray, tmp_path):
    """A real small filesystem: a 3 MiB tmpfs holds the run's dataset and logs, not its ~6 MiB checkpoint."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); the file-size limit drill below "
                    "covers the same error")
    try:
        proc = _driver(one_node_ray, small, "full", "training.kimg=0.048", "training.snap_kimg=0.016", "run.max_failures=3")
        out, _ = proc.communicate(timeout=300)
        errors = [ln for ln in out.splitlines() if "error" in ln.lower() or "Traceback" in ln]
        assert proc.returncode == 2, out[-3000:]
        assert len(errors) == 1 and "no space left" in errors[0] and "MiB free" in errors[0], out[-3000:]
        assert out.count("worker(s) on 1 node(s) at kimg 0.000") == 1, out[-3000:]  # one attempt: not retried
        assert "removed the partial checkpoint_" in errors[0]
        assert _whole(small / "full")
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_a_file_size_limit_gives_the_same_one_line_error_in_process(tmp_path, synthetic_zip):
    """Where no tmpfs can be mounted: RLIMIT_FSIZE makes every write past 1 MiB fail (EFBIG) in this process,
    where the training loop runs (LocalSession), and the checkpoint write is refused the same way."""
    from gan3d.config import load_config
    from gan3d.errors import StorageFull
    from gan3d.training.loop import training_loop
    from gan3d.training.session import LocalSession

    cfg = load_config(SMOKE, [*TINY, "training.kimg=0.016", "logging.wandb=false"])
    tmp = Path(tempfile.gettempdir())
    temporaries = set(tmp.glob("gan3d-ckpt-*"))
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal's default kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, old[1]))
    try:
        with pytest.raises(StorageFull) as e:
            training_loop(cfg, tmp_path, LocalSession(tmp_path), str(synthetic_zip), "fsize")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)
    msg = str(e.value)
    assert "\n" not in msg and "a file grew past the allowed size" in msg and "MiB" in msg
    assert _whole(tmp_path) and set(tmp.glob("gan3d-ckpt-*")) <= temporaries  # the partial copy is gone too
