"""Sweeps on a real local Ray Tune: trials table, W&B group, ASHA early stopping, driver kill + resume,
a PBT exploit, and the bad inputs that must fail before any trial starts."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

import gan3d
from gan3d.errors import ConfigError
from gan3d.orchestrate.sweep_spec import load_sweep, trials_that_fit
from gan3d.track.store import read_metrics
from gan3d.track.wandb_reader import find_run_file, run_info
from gan3d.training.checkpoint import read_checkpoint
from conftest import ROOT

pytestmark = pytest.mark.slow  # Ray clusters and real training runs: `pytest -m 'not slow'` skips them

SWEEP = ROOT / "experiments" / "sweeps" / "smoke.yaml"
FAST = ["training.kimg=0.064", "training.tick_kimg=0.016", "training.snap_kimg=0.032", "training.metric_kimg=0.016",
        "training.image_kimg=1", "metrics.num_fakes=16", "dataset.synthetic_size=48", "logging.grid_size=4",
        "logging.video_frames=2"]


def write_sweep(tmp_path, name, **settings):
    spec = {"experiment": str(ROOT / "experiments" / "smoke.yaml"), "overrides": FAST, "metric": "swd",
            "mode": "min", "out": str(tmp_path), "name": name, **settings}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_smoke_sweep_runs_trials_into_one_table_and_one_wandb_group(one_node_ray, tmp_path):
    res = gan3d.sweep(str(SWEEP), [f"out={tmp_path}", *FAST])
    df = res.trials
    assert len(df) == 4 and (df["status"] == "TERMINATED").all()
    assert set(df["config/training.gamma"]) == {0.05, 0.5} and df["best/swd"].notna().all()
    assert (df["kimg"] >= 0.064 - 1e-9).all()
    assert res.best_run_dir is not None and res.best_run_dir.is_dir()
    assert read_checkpoint(res.best_checkpoint).counters.kimg > 0
    groups = {run_info(find_run_file(d))["group"] for d in (res.sweep_dir / "runs").iterdir()}
    assert groups == {"smoke"}
    tags = run_info(find_run_file(res.best_run_dir))["tags"]
    assert any(t.startswith("gamma=") for t in tags)
    # the comparison report of the sweep: table of the 4 trials, metric vs each swept knob, parallel coordinates
    from gan3d.tools.report import write_html
    page = write_html([res.sweep_dir], tmp_path / "sweep.html").read_text()
    for needle in ("final swd vs training.gamma", "final swd vs training.patch.beta_end", "parallel coordinates",
                   "swept:training.gamma"):
        assert needle in page, needle
    assert page.count("<tr") == 5 and page.count("alt='samples ") == 4  # header + 4 trials


def test_three_trial_sweep_and_asha_stops_the_clearly_worse_trial(one_node_ray, tmp_path, capsys):
    """Two trials whose G steps 200x too far (lr 0.5): by their fourth step their SWD is several hundred worse than
    the good trial's at the same kimg (measured: 1107 / 1077 against 631 / 730 at 0.032 kimg for seeds 0 / 1), so
    ASHA's first rung (0.032 kimg) stops at least one of them."""
    path = write_sweep(tmp_path, "asha", max_concurrent_trials=1,
                       space={"training.lr_g": {"grid": [0.0025, 0.5, 0.5]}},
                       scheduler={"kind": "asha", "grace_period_kimg": 0.032, "reduction_factor": 2})
    res = gan3d.sweep(str(path), ["training.kimg=0.096"])
    df = res.trials.sort_values("trial_id")
    assert len(df) == 3
    good = df[df["config/training.lr_g"] == 0.0025]
    bad = df[df["config/training.lr_g"] == 0.5]
    assert good["kimg"].iloc[0] == pytest.approx(0.096)
    assert (bad["kimg"] < 0.096 - 1e-9).any(), df[["trial_id", "kimg", "best/swd"]]
    # the console: one start line and one end line per trial, saying which the scheduler stopped
    out = capsys.readouterr().out
    for tid in df["trial_id"]:
        assert out.count(f"gan3d: trial {tid} started: lr_g=") == 1, out[-2000:]
        assert out.count(f"gan3d: trial {tid} finished at kimg") + out.count(f"gan3d: trial {tid} stopped by") == 1
    assert "stopped by the scheduler" in out and "finished at kimg 0.096" in out


def test_sweep_state_writable_by_others_is_not_restored(tmp_path):
    """Tune's restore unpickles the sweep's state: a state file others could have written is refused."""
    from gan3d.errors import Gan3dError
    from gan3d.orchestrate.sweep import check_trusted_state

    state = tmp_path / "tuner.pkl"
    state.write_bytes(b"pickle")
    state.chmod(0o644)
    check_trusted_state(tmp_path)
    state.chmod(0o666)
    with pytest.raises(Gan3dError, match=r"tuner.pkl: Tune would unpickle .* writable by group/others"):
        check_trusted_state(tmp_path)


def test_killed_sweep_driver_resumes_without_rerunning_finished_trials(one_node_ray, tmp_path, capsys):
    path = write_sweep(tmp_path, "resume", max_concurrent_trials=1, space={"training.gamma": {"grid": [0.05, 0.1]}})
    address = one_node_ray.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, "-m", "gan3d.cli", "sweep", str(path), "training.kimg=0.128",
                               "--address", address], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sweep_dir = tmp_path / "resume"
    deadline = time.time() + 300
    finished = running_ckpt = None
    while time.time() < deadline and driver.poll() is None:
        table = sweep_dir / "trials.parquet"
        if table.exists():
            import pyarrow.parquet as pq
            rows = pq.read_table(table).to_pylist()
            done = [r for r in rows if r["status"] == "TERMINATED"]
            live = [r for r in rows if r["status"] == "RUNNING" and r.get("kimg", 0) >= 0.032]
            if done and live:
                finished, running_ckpt = done[0], live[0]
                break
        time.sleep(0.3)
    assert finished is not None, "never saw one trial finished and another checkpointed"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    finished_dir = sweep_dir / "runs" / finished["trial_id"]
    finished_metrics = read_metrics(finished_dir)
    finished_wandb = sorted((finished_dir / "wandb").glob("*run-*"))
    interrupted_dir = sweep_dir / "runs" / running_ckpt["trial_id"]
    capsys.readouterr()
    res = gan3d.sweep(str(path), ["training.kimg=0.128"], resume=True)
    df = res.trials
    assert len(df) == 2 and (df["status"] == "TERMINATED").all()
    assert len(read_metrics(finished_dir)) == len(finished_metrics)  # not rerun
    assert sorted((finished_dir / "wandb").glob("*run-*")) == finished_wandb  # no empty W&B run either
    out = capsys.readouterr().out
    assert "stopped by the scheduler at kimg 0.000" not in out, out[-3000:]
    assert df.set_index("trial_id").loc[finished["trial_id"], "kimg"] == pytest.approx(0.128)
    m = read_metrics(interrupted_dir)
    assert m["kimg"].max() == pytest.approx(0.128) and list(m["kimg"]) == sorted(m["kimg"])
    assert m["kimg"].min() < 0.032 + 1e-9  # the rows before the kill are kept: it continued, not restarted


def test_a_second_sweep_driver_on_the_same_sweep_dir_is_refused(tmp_path):
    from gan3d.orchestrate.lock import hold
    path = write_sweep(tmp_path, "busy", space={"training.gamma": {"grid": [0.1]}})
    (tmp_path / "busy").mkdir()
    with hold(tmp_path / "busy", "sweep"):  # another driver (an open lock of its own, as another process has)
        res = subprocess.run([sys.executable, "-m", "gan3d.cli", "sweep", str(path)], capture_output=True, text=True,
                             timeout=120)
    assert res.returncode == 2 and "sweep directory is in use by another gan3d driver (pid " in res.stderr, res.stderr
    assert f"pid {os.getpid()} on " in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_pbt_exploit_continues_from_another_trials_checkpoint(one_node_ray, tmp_path):
    # two different starting points (grid, not a random choice: two identical trials tie on every score, and
    # PBT then never ranks one above the other, so nothing is exploited)
    path = write_sweep(tmp_path, "pbt", num_samples=1, max_concurrent_trials=2,
                       space={"training.gamma": {"grid": [0.05, 1.0]}},
                       scheduler={"kind": "pbt", "perturbation_interval_kimg": 0.032, "quantile_fraction": 0.5,
                                  "resample_probability": 1.0,
                                  "mutations": {"training.patch.anneal_kimg": {"choice": [1.0, 4.0]},
                                                "training.gamma": {"choice": [0.05, 1.0]}}})
    res = gan3d.sweep(str(path), ["training.kimg=0.128"])
    log = res.sweep_dir / "exploits.jsonl"
    assert log.is_file(), res.trials
    exploits = [json.loads(line) for line in log.read_text().splitlines()]
    e = exploits[0]
    assert e["source_trial"] != e["trial"] and e["kimg"] > 0
    run = res.sweep_dir / "runs" / e["run_name"]
    m = read_metrics(run)
    assert m["kimg"].min() > e["kimg"] - 1e-9  # continues at the source's kimg, not from zero
    ck = read_checkpoint(sorted(p for p in run.glob("checkpoint_*") if p.is_dir())[-1])
    anneal = ck.cfg.training.patch.anneal_kimg
    assert anneal == e["params"]["training.patch.anneal_kimg"]
    row = m.iloc[0]  # the schedule follows the perturbed anneal_kimg at the inherited kimg
    assert row["patch_beta"] == pytest.approx(0.001 + 0.799 * min(row["kimg"] / anneal, 1.0))


def test_bad_sweeps_fail_before_any_trial(tmp_path):
    with pytest.raises(ConfigError, match=r"space key 'training.gama': .*unknown key 'training.gama'"):
        load_sweep(write_sweep(tmp_path, "a", space={"training.gama": {"grid": [0.1]}}))
    with pytest.raises(ConfigError, match=r"space\['training.gamma'\]: empty grid"):
        load_sweep(write_sweep(tmp_path, "b", space={"training.gamma": {"grid": []}}))
    with pytest.raises(ConfigError, match=r"space key 'training.gamma': .*-1.0 is not allowed"):
        load_sweep(write_sweep(tmp_path, "c", space={"training.gamma": {"grid": [0.1, -1]}}))
    with pytest.raises(ConfigError, match=r"metric 'fid50k' is never reported"):
        load_sweep(write_sweep(tmp_path, "d", metric="fid50k", space={"training.gamma": {"grid": [0.1]}}))
    with pytest.raises(ConfigError, match=r"sweep 'w': key 'training.batch' = 8 .* workers \(resources.workers = 3\)"):
        load_sweep(write_sweep(tmp_path, "w", space={"training.gamma": {"grid": [0.1]}}, resources={"workers": 3}))
    s = load_sweep(write_sweep(tmp_path, "e", space={"training.gamma": {"grid": [0.1]}},
                               resources={"workers": 4, "cpus_per_worker": 2}))
    with pytest.raises(ConfigError, match=r"a trial needs 8.01 CPUs and 0 GPUs .* cluster has 4 CPUs"):
        trials_that_fit(s.settings, {"CPU": 4.0})
    res = subprocess.run([sys.executable, "-m", "gan3d.cli", "sweep", str(tmp_path / "a.yaml")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "gan3d: error: sweep 'a': space key 'training.gama'" in res.stderr
