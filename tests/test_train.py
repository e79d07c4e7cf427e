"""Single runs on a real local Ray Train cluster: train, report, checkpoint, resume (with another worker
count), survive a killed worker, stop gracefully on SIGTERM, log to an offline W&B run, fail fast."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import gan3d
from gan3d.config import load_config
from gan3d.errors import ConfigError
from gan3d.track.store import read_metrics
from gan3d.track.wandb_reader import find_run_file, history
from gan3d.training.checkpoint import read_checkpoint
from conftest import SMOKE, TINY

pytestmark = pytest.mark.slow  # Ray clusters and real training runs: `pytest -m 'not slow'` skips them


def tiny(*extra):
    return load_config(SMOKE, TINY + list(extra))


@pytest.fixture(scope="module")
def first_run(one_node_ray, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return gan3d.train(tiny(), out=str(out), name="smoke1"), out


def test_smoke_run_trains_reports_and_checkpoints(first_run):
    res, out = first_run
    assert res.stop_reason == "done" and res.kimg >= 0.048 and res.metric == "swd"
    assert res.run_dir == out / "smoke1" and res.best_checkpoint is not None and res.best_metric > 0
    ck = read_checkpoint(res.latest_checkpoint)
    assert ck.counters.cur_nimg == 48 and set(ck.state) >= {"model/G", "model/D", "model/G_ema", "model/augment",
                                                             "optim/G", "optim/D", "rng"}
    df = read_metrics(res.run_dir)
    assert list(df["kimg"]) == sorted(df["kimg"]) and df["kimg"].iloc[-1] == pytest.approx(0.048)
    for col in ("loss_G", "loss_D_real", "loss_D_fake", "augment_p", "patch_beta", "sec_per_kimg", "swd"):
        assert col in df and df[col].notna().any(), col
    assert df["r1_penalty"].notna().any()  # lazy R1 ran
    samples = sorted(p.name for p in (res.run_dir / "samples").iterdir())
    assert any(s.startswith("grid_") for s in samples) and any(s.endswith(".gif") for s in samples)
    G = gan3d.load_generator(res.best_checkpoint)
    with torch.no_grad():
        img = G(torch.randn(1, G.cfg.z_dim), None, torch.tensor([[1.57, 1.3, 0.0]]))
    assert img.shape == (1, 3, 32, 32)


def test_wandb_offline_run_holds_scalars_and_media(first_run):
    res, _ = first_run
    rows = history(find_run_file(res.run_dir))
    assert len(rows) == len(read_metrics(res.run_dir))
    assert all("loss_G" in r and "kimg" in r for r in rows)
    assert any("swd" in r for r in rows)
    assert any(r.get("samples/grid/_type") == "image-file" for r in rows)
    assert any(r.get("samples/orbit/_type") == "video-file" for r in rows)


def test_rerun_resumes_at_the_right_kimg_with_two_workers(first_run):
    res, out = first_run
    before = read_metrics(res.run_dir)
    # what a killed attempt can leave beside Ray's registered checkpoints: a newer complete dir, a partial one
    newer, partial = res.run_dir / "checkpoint_2099-01-01_00-00-00.000000", res.run_dir / "checkpoint_2099-01-02"
    shutil.copytree(res.latest_checkpoint, newer)
    meta = json.loads((newer / "meta.json").read_text())
    (newer / "meta.json").write_text(json.dumps({**meta, "cur_nimg": 80}))
    partial.mkdir()
    (partial / "state.pt").write_bytes((newer / "state.pt").read_bytes()[:100])
    again = gan3d.train(tiny("training.kimg=0.096"), out=str(out), name="smoke1", workers=2)
    assert not newer.exists() and not partial.exists()  # removed, not resumed from
    assert again.stop_reason == "done" and again.kimg == pytest.approx(0.096)
    df = read_metrics(res.run_dir)
    new = df[df["kimg"] > 0.048 + 1e-9]
    assert len(df) > len(before) and new["kimg"].min() == pytest.approx(0.064)  # continues, not restarts
    assert list(df["kimg"]) == sorted(df["kimg"])
    ck = read_checkpoint(again.latest_checkpoint)
    assert ck.counters.cur_nimg == 96 and ck.cfg.training.batch == 8 and ck.cfg.run.workers == 2
    # the schedules continue from kimg, not from zero
    assert new["patch_beta"].iloc[0] == pytest.approx(0.001 + 0.799 * 0.064 / 2)
    # a finished run rerun does nothing and says so
    done = gan3d.train(tiny("training.kimg=0.096"), out=str(out), name="smoke1")
    assert done.stop_reason == "done" and done.kimg == pytest.approx(0.096)
    assert len(read_metrics(res.run_dir)) == len(df)


def _train_worker_pids(run_dir: Path) -> list[int]:
    """The pids of this run's Ray Train workers, as the run records them (workers.jsonl), never by process
    name: another run's workers on the machine are not this test's to kill."""
    lines = (run_dir / "workers.jsonl").read_text().splitlines() if (run_dir / "workers.jsonl").exists() else []
    return [w["pid"] for w in json.loads(lines[-1])["workers"]] if lines else []


def _until(condition, timeout: float, what: str):
    """Poll `condition` until it holds (returns its value) or `timeout` seconds pass (fails naming `what`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"not within {timeout:g} s: {what}")


def test_killed_worker_is_survived(one_node_ray, tmp_path):
    cfg = tiny("training.kimg=0.4", "training.tick_kimg=0.016", "training.metric_kimg=10", "training.image_kimg=10",
               "run.max_failures=2")
    box = {}
    thread = threading.Thread(target=lambda: box.update(res=gan3d.train(cfg, out=str(tmp_path), name="kill")))
    thread.start()
    snapshot = tmp_path / "kill" / "checkpoint_manager_snapshot.json"
    def registered() -> int:
        try:
            return len(json.loads(snapshot.read_text())["checkpoint_results"])
        except (OSError, ValueError, KeyError):
            return 0
    _until(lambda: registered() >= 2, 240, "the controller registers a checkpoint beyond the first")
    pids = _until(lambda: _train_worker_pids(tmp_path / "kill"), 60, "the run records its worker")
    killed_at = read_metrics(tmp_path / "kill")["kimg"].max()
    os.kill(pids[0], signal.SIGKILL)
    thread.join(timeout=300)
    res = box["res"]
    assert res.stop_reason == "done" and res.kimg == pytest.approx(0.4)
    df = read_metrics(tmp_path / "kill")
    assert killed_at < 0.4 and df["kimg"].max() == pytest.approx(0.4)
    assert list(df["kimg"]) == sorted(df["kimg"])  # replayed ticks after the restart replace the lost ones


def test_sigterm_finishes_the_step_checkpoints_and_exits_nonzero(one_node_ray, tmp_path):
    address = one_node_ray.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "gan3d.cli", "train", str(SMOKE), *TINY, "training.kimg=50",
           "training.snap_kimg=100", "--out", str(tmp_path), "--name", "term", "--address", address]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # wait until training ticks
        lines.append(line)
        if "tick 1 " in line:
            break
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=180)
    text = "".join(lines) + out
    assert proc.returncode == 130, text[-3000:]
    assert "stopped on request; checkpoint written" in text
    ckpts = sorted(p for p in (tmp_path / "term").glob("checkpoint_*") if p.is_dir())
    assert ckpts, "no checkpoint after SIGTERM"
    assert 0 < read_checkpoint(ckpts[-1]).counters.kimg < 50


def test_console_prints_each_tick_once_and_a_rerun_says_it_resumes(one_node_ray, tmp_path):
    """As the CLI runs (Ray's log forwarding on): a header, one line per tick, no Ray Train report dumps;
    options and key=value overrides in any order; the rerun names the checkpoint it resumes from."""
    address = one_node_ray.get_runtime_context().gcs_address

    def run(kimg):
        cmd = [sys.executable, "-m", "gan3d.cli", "train", str(SMOKE), "--out", str(tmp_path), *TINY,
               "--name", "console", f"training.kimg={kimg}", "--address", address]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stdout + res.stderr

    first = run(0.048)
    ticks = [line.split("tick ", 1)[1].split()[0] for line in first.splitlines() if " tick " in f" {line}"]
    assert ticks == ["1", "2", "3"], first[-3000:]
    assert "gan3d: new run" in first and f"gan3d: run {tmp_path / 'console'}" in first
    assert "TrainingReport(" not in first and "Requesting resources" not in first
    assert "RayTrainWorker pid=" not in first  # gan3d's lines, not Ray's prefixed forwarding of them
    assert first.count("gan3d: 1 worker(s) on 1 node(s)") == 1
    second = run(0.064)
    ticks = [line.split("tick ", 1)[1].split()[0] for line in second.splitlines() if " tick " in f" {line}"]
    assert ticks == ["4"], second[-3000:]
    assert "gan3d: resuming from checkpoint_" in second and "at kimg 0.048 (patch beta" in second


def test_no_secret_reaches_a_log_or_file(one_node_ray, tmp_path):
    """Credentials set for the driver appear nowhere in Ray's session directory or the run directory."""
    import secrets as _secrets
    from gan3d.orchestrate.runtime import SECRET_ENV

    dummies = {k: f"g3dummy{_secrets.token_hex(8)}" for k in SECRET_ENV}
    address = one_node_ray.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "gan3d.cli", "train", str(SMOKE), *TINY, "training.kimg=0.016", "--out", str(tmp_path),
           "--name", "secrets", "--address", address]
    res = subprocess.run(cmd, env={**os.environ, **dummies, "WANDB_MODE": "offline"}, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    session = Path(one_node_ray._private.worker._global_node.get_session_dir_path())
    leaks = []
    for root in (session, tmp_path / "secrets"):
        for f in root.rglob("*"):
            if f.is_file() and not f.is_symlink() and not f.is_socket():
                data = f.read_bytes()
                leaks += [f"{f}: {k}" for k, v in dummies.items() if v.encode() in data]
    assert not leaks, leaks
    assert any(f.name.startswith("runtime_env") for f in (session / "logs").iterdir())  # the log that used to hold them


def test_an_unreachable_cluster_is_one_line_at_once(tmp_path):
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "gan3d.cli", "train", str(SMOKE), "--address", "127.0.0.1:1",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and time.time() - t0 < 60
    assert res.stderr.strip().splitlines()[-1].startswith("gan3d: error: --address 127.0.0.1:1: no Ray cluster answers")
    assert "Traceback" not in res.stderr and not list(tmp_path.rglob("*.zip"))  # said before the dataset is made


def test_invalid_config_or_missing_dataset_fails_before_ray(tmp_path):
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "gan3d.cli", "train", str(SMOKE), "dataset.path=/no/such.zip",
                          "--out", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2 and "gan3d: error: /no/such.zip: dataset not found" in res.stderr
    assert "Ray" not in res.stdout + res.stderr and time.time() - t0 < 60
    res = subprocess.run([sys.executable, "-m", "gan3d.cli", "train", str(SMOKE), "training.lr_g=-1"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "training.lr_g' = -1.0 is not allowed: expected > 0" in res.stderr
    with pytest.raises(ConfigError, match="multiple of the number of workers"):
        gan3d.train(tiny("training.batch=6"), workers=4, out=str(tmp_path))


def test_absurd_learning_rate_is_detected_and_stops(tmp_path, synthetic_zip, capsys):
    from gan3d.training.loop import training_loop
    from gan3d.training.session import LocalSession

    cfg = tiny("training.lr_g=100", "training.lr_d=100", "training.kimg=2", "training.tick_kimg=0.032",
               "training.stop_on_divergence=true", "logging.wandb=false", "metrics.metrics=[]")
    row = training_loop(cfg, tmp_path, LocalSession(tmp_path), str(synthetic_zip), "div")
    assert row["stop_reason"] == "diverged" and row["kimg"] < 2
    assert "gan3d WARNING: training looks diverged" in capsys.readouterr().out
    assert (tmp_path / "checkpoints" / "latest.json").is_file()  # the state at divergence is kept


def test_a_damaged_newest_checkpoint_is_skipped_for_resume_and_render(tmp_path, synthetic_zip, capsys):
    """Checkpoints carry a checksum; a truncated newest one is skipped (one line), resume and best-checkpoint
    selection use the newest / best one that reads."""
    from gan3d.training.checkpoint import best_checkpoint, list_checkpoints
    from gan3d.training.loop import training_loop
    from gan3d.training.session import LocalSession

    cfg = tiny("training.kimg=0.032", "logging.wandb=false", "training.metric_kimg=0.016")
    training_loop(cfg, tmp_path, LocalSession(tmp_path), str(synthetic_zip), "dmg")
    first, newest = list_checkpoints(tmp_path)
    assert read_checkpoint(newest).counters.kimg == pytest.approx(0.032)
    data = (newest / "state.pt").read_bytes()
    (newest / "state.pt").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    best, _ = best_checkpoint(tmp_path)
    assert best == first and f"skipped {newest.name}" in capsys.readouterr().out
    (newest / "state.pt").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit flipped
    with pytest.raises(gan3d.CheckpointError, match="damaged"):
        read_checkpoint(newest)
    row = training_loop(tiny("training.kimg=0.048", "logging.wandb=false"), tmp_path, LocalSession(tmp_path),
                        str(synthetic_zip), "dmg")
    out = capsys.readouterr().out
    assert f"skipped {newest.name}" in out and f"using {first.name} at kimg 0.016" in out
    assert row["kimg"] == pytest.approx(0.048)
    assert list(read_metrics(tmp_path)["kimg"]) == pytest.approx([0.016, 0.032, 0.048])  # 0.032 replayed once


def test_fine_tuning_starts_from_g_d_and_g_ema_with_the_references_adjustments(tmp_path, synthetic_zip, capsys):
    """training.resume_only_G, as the reference's train.py:283-286: G, D and G_ema from the checkpoint, fresh Adam,
    counters and ADA p, ADA reacting in 100 kimg, no EMA ramp-up, no blur."""
    from gan3d.training.checkpoint import list_checkpoints
    from gan3d.training.loop import training_loop
    from gan3d.training.session import LocalSession

    training_loop(tiny("training.kimg=0.032", "logging.wandb=false", "training.seed=5"), tmp_path / "a",
                  LocalSession(tmp_path / "a"),
                  str(synthetic_zip), "a")
    start = read_checkpoint(list_checkpoints(tmp_path / "a")[-1])
    cfg = tiny("training.kimg=0.016", "logging.wandb=false", f"training.resume={start.path}",
               "training.resume_only_G=true")
    t = cfg.training
    assert (t.augment.speed_kimg, t.ema_rampup, t.blur_sigma) == (100.0, 0.0, 0.0)
    training_loop(cfg, tmp_path / "b", LocalSession(tmp_path / "b"), str(synthetic_zip), "b")
    assert "fine-tuning: G, D, G_ema" in capsys.readouterr().out
    tuned = read_checkpoint(list_checkpoints(tmp_path / "b")[-1])
    assert tuned.counters.cur_nimg == 16  # counted from 0
    for net in ("G", "D"):  # two small Adam steps away from the start, not a fresh initialisation
        moved = max((tuned.state[f"model/{net}"][k].float() - v.float()).abs().max().item()
                    for k, v in start.state[f"model/{net}"].items() if v.is_floating_point())
        assert 0 < moved < 0.2, (net, moved)


def test_ticks_of_a_killed_attempt_reach_wandb_after_the_resume(tmp_path, synthetic_zip, capsys):
    """SIGKILL loses W&B's buffered run file; the resumed attempt logs what metrics.parquet has and W&B lacks."""
    from gan3d.training.loop import training_loop
    from gan3d.training.session import LocalSession

    over = TINY + ["training.snap_kimg=0.032", "training.image_kimg=10", "metrics.metrics=[]"]
    code = (f"from gan3d.config import load_config; from gan3d.training.loop import training_loop; "
            f"from gan3d.training.session import LocalSession; "
            f"training_loop(load_config({str(SMOKE)!r}, {over + ['training.kimg=10']!r}), {str(tmp_path)!r}, "
            f"LocalSession({str(tmp_path)!r}), {str(synthetic_zip)!r}, 'killed')")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if (tmp_path / "metrics.parquet").is_file() and len(read_metrics(tmp_path)) >= 3:
            break
        time.sleep(0.2)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read()[-2000:]
    killed = [p for p in (tmp_path / "wandb").glob("*run-*/run-*.wandb")]
    assert killed and all(len(history(p)) == 0 for p in killed)  # what SIGKILL leaves of W&B's buffered file
    capsys.readouterr()
    training_loop(load_config(SMOKE, over + ["training.kimg=0.064"]), tmp_path, LocalSession(tmp_path),
                  str(synthetic_zip), "killed")
    assert "W&B lacked 2 tick(s) of an earlier attempt (kimg 0.016-0.032)" in capsys.readouterr().out
    logged = [round(r["kimg"], 6) for p in (tmp_path / "wandb").glob("*run-*/run-*.wandb") for r in history(p)]
    assert sorted(logged) == [0.016, 0.032, 0.048, 0.064]  # every tick once
    assert list(read_metrics(tmp_path)["kimg"]) == pytest.approx([0.016, 0.032, 0.048, 0.064])


def test_a_rerun_stops_what_a_killed_drivers_local_ray_left_running(one_node_ray, tmp_path):
    """SIGKILL of a driver that started its own Ray leaves Ray's agents running as orphans; the rerun of the
    same run dir stops exactly the processes that driver recorded, and only those. Both drivers start their own
    Ray beside the test session's: Ray's own actors (Train's placement-group cleaner) must find theirs."""
    import psutil

    cmd = [sys.executable, "-m", "gan3d.cli", "train", str(SMOKE), *TINY, "--out", str(tmp_path), "--name", "orphans",
           "metrics.metrics=[]", "training.image_kimg=10"]
    proc = subprocess.Popen(cmd + ["training.kimg=10"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "tick 1 " in line:
            break
    proc.kill()
    proc.wait()
    record = json.loads((tmp_path / "orphans" / ".ray_processes.json").read_text())
    assert record["driver"]["pid"] == proc.pid
    deadline = time.monotonic() + 30  # the kernel reparents the dead driver's children to init
    while True:
        left = [psutil.Process(e["pid"]) for e in record["processes"] if psutil.pid_exists(e["pid"])]
        if (left and all(p.ppid() == 1 for p in left)) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert left and all(p.ppid() == 1 for p in left), "nothing orphaned: the drill no longer reproduces"
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # not Ray's: untouched
    res = subprocess.run(cmd + ["training.kimg=0.016"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "process(es) of the local Ray an earlier, killed run of" in res.stdout, res.stdout[-2000:]
    out = res.stdout + res.stderr
    assert "multiple active Ray instances" not in out and "Traceback" not in out, out[-3000:]
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in left)
    assert bystander.poll() is None
    bystander.kill()


def test_bad_data_mid_training_fails_at_once_without_retries(one_node_ray, tmp_path, synthetic_zip):
    """A dataset entry that turns out unreadable during training (its header read fine when the run started) is
    not transient: one clear error naming it, no restarts, and the checkpoints written before stay readable."""
    import zipfile

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(synthetic_zip) as src, zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as dst:
        names = sorted(n for n in src.namelist() if n.endswith(".png"))
        for n in src.namelist():  # the last image gets 64 KiB after its PNG end: read only at training time
            dst.writestr(n, src.read(n) + (bytes(65536) if n == names[-1] else b""))
    with zipfile.ZipFile(bad) as z:
        info = z.getinfo(names[-1])
    raw = bytearray(bad.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # the entry's data
    raw[start + info.compress_size - 100] ^= 0xFF  # past the header: its CRC fails only on a full read
    bad.write_bytes(bytes(raw))
    cfg = tiny("training.kimg=0.48", f"dataset.path={bad}", "training.snap_kimg=0.008")
    t0 = time.time()
    with pytest.raises(gan3d.DatasetError, match=names[-1].replace(".", r"\.") + ": unreadable .*Bad CRC"):
        gan3d.train(cfg, out=str(tmp_path), name="baddata")
    run = tmp_path / "baddata"
    assert len((run / "workers.jsonl").read_text().splitlines()) == 1  # started once: no retries
    assert time.time() - t0 < 120
    for ck in (p for p in run.glob("checkpoint_*") if p.is_dir()):
        read_checkpoint(ck)  # what was written before stays readable
