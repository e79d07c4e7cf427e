"""Run storage in an object store: a local S3-compatible server (moto), Ray Train's checkpoints and gan3d's
run files in the bucket, a resume from the bucket on a machine with no local files, and eval / load from it."""
import json
import os
import socket
import subprocess
import sys
import time

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch

import gan3d
from gan3d.errors import ConfigError
from gan3d.storage import RunMirror, filesystem, local_copy
from conftest import SMOKE, TINY

pytestmark = pytest.mark.slow  # Ray clusters and real training runs: `pytest -m 'not slow'` skips them


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free port, a bucket, and the AWS_* variables pyarrow and Ray read."""
    boto3 = pytest.importorskip("boto3")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=log, stderr=log)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from botocore.exceptions import EndpointConnectionError

    try:
        deadline = time.monotonic() + 30
        while True:  # the server is up when it accepts a connection; any other error is a real one
            assert server.poll() is None, f"moto server exited: {open(log.name).read()[-2000:]}"
            try:
                boto3.client("s3").create_bucket(Bucket="gan3d-test")
                break
            except EndpointConnectionError:
                assert time.monotonic() < deadline, "moto server did not accept connections within 30 s"
                time.sleep(0.1)
        yield env  # merged into os.environ at call time: the session's Ray adds its auth settings later
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        server.terminate()
        server.wait(10)


def _listing(uri):
    fs, root = filesystem(uri)
    return {i.path[len(root) + 1:] for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
            if i.type == pafs.FileType.File}


def test_mirror_pushes_only_changes_and_pulls_what_is_missing(s3, tmp_path):
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    (run / "metrics.parquet").write_bytes(b"v1")
    (run / "samples" / "grid.png").write_bytes(b"png")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "state.pt").write_bytes(b"Train's job, not the mirror's")
    mirror = RunMirror(run, "s3://gan3d-test/mirror/run")
    assert sorted(mirror.push()) == ["metrics.parquet", "samples/grid.png"]
    assert mirror.push() == []  # nothing changed
    (run / "metrics.parquet").write_bytes(b"v2, longer")
    assert mirror.push() == ["metrics.parquet"]
    assert _listing("s3://gan3d-test/mirror/run") == {"metrics.parquet", "samples/grid.png"}
    stale = tmp_path / "other"
    stale.mkdir()
    (stale / "metrics.parquet").write_bytes(b"an older run of the same name")
    (stale / "workers.jsonl").write_text("{}\n")
    elsewhere = RunMirror(stale, "s3://gan3d-test/mirror/run")
    assert elsewhere.pull(["metrics.parquet", "workers.jsonl"]) == ["metrics.parquet"]
    assert (stale / "metrics.parquet").read_bytes() == b"v2, longer"  # the store wins over a stale local copy
    assert not (stale / "workers.jsonl").exists()  # and what the store lacks is not continued
    copy = local_copy("s3://gan3d-test/mirror/run", cache=tmp_path / "cache")
    assert (copy / "samples" / "grid.png").read_bytes() == b"png"


def _train(s3, out, kimg):
    cmd = [sys.executable, "-m", "gan3d.cli", "train", str(SMOKE), *TINY, f"training.kimg={kimg}",
           "run.storage_path=s3://gan3d-test/runs", "--out", str(out), "--name", "s3run",
           "--address", os.environ["GAN3D_TEST_RAY_ADDRESS"]]
    res = subprocess.run(cmd, env={**os.environ, **s3, "WANDB_MODE": "offline"}, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def test_run_in_a_bucket_resumes_from_it_on_a_machine_without_its_files(s3, one_node_ray, tmp_path):
    out = _train(s3, tmp_path / "machine1", 0.032)
    assert "s3://gan3d-test/runs/s3run" in out
    files = _listing("s3://gan3d-test/runs/s3run")
    assert {"metrics.parquet", "workers.jsonl", "checkpoint_manager_snapshot.json"} <= files
    assert any(f.startswith("checkpoint_") and f.endswith("meta.json") for f in files)
    assert any(f.startswith("synthetic_") and f.endswith(".zip") for f in files)  # workers read the data there
    assert any(f.startswith("wandb/") for f in files) and any(f.startswith("samples/") for f in files)

    # A second machine: a fresh local dir, the same storage path -> Train resumes from the bucket's checkpoint.
    _train(s3, tmp_path / "machine2", 0.064)
    fs, root = filesystem("s3://gan3d-test/runs/s3run")
    with fs.open_input_file(f"{root}/metrics.parquet") as f:
        kimg = pq.read_table(f).column("kimg").to_pylist()
    assert kimg == pytest.approx([0.016, 0.032, 0.048, 0.064])  # one table, continued, nothing repeated
    with fs.open_input_stream(f"{root}/workers.jsonl") as f:
        starts = [json.loads(line) for line in f.read().decode().splitlines()]
    assert [s["kimg"] for s in starts] == pytest.approx([0.0, 0.032])

    # eval and load_generator take the URI directly; eval.json lands back in the bucket.
    res = subprocess.run([sys.executable, "-m", "gan3d.cli", "eval", "s3://gan3d-test/runs/s3run", "--metrics", "swd",
                          "--num-fakes", "16"], env={**os.environ, **s3}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "eval.json" in _listing("s3://gan3d-test/runs/s3run")
    ckpt = max(f.split("/")[0] for f in _listing("s3://gan3d-test/runs/s3run") if f.startswith("checkpoint_20"))
    G = gan3d.load_generator(f"s3://gan3d-test/runs/s3run/{ckpt}")
    assert G.render([0], torch.tensor([1.57, 1.3, 0.0])).shape[-1] == 32


def test_sweeps_refuse_a_run_storage_path(tmp_path):
    from gan3d.orchestrate.sweep_spec import load_sweep

    with pytest.raises(ConfigError, match="run.storage_path"):
        load_sweep(str(SMOKE.parent / "sweeps" / "smoke.yaml"), ["run.storage_path=s3://gan3d-test/x"])


def test_sweep_stored_in_a_bucket(s3, one_node_ray, tmp_path):
    """`out: s3://...`: Tune's state, every trial's Train run and trials.parquet live in the bucket."""
    import yaml

    spec = {"experiment": str(SMOKE), "overrides": [*TINY, "training.kimg=0.032", "metrics.num_fakes=16"],
            "space": {"training.gamma": {"grid": [0.05, 0.5]}}, "metric": "swd", "mode": "min",
            "scheduler": {"kind": "fifo"}, "resources": {"workers": 1, "cpus_per_worker": 1},
            "max_concurrent_trials": 2, "out": "s3://gan3d-test/sweeps", "name": "s3sweep"}
    path = tmp_path / "s3sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, **s3, "WANDB_MODE": "offline"}
    res = subprocess.run([sys.executable, "-m", "gan3d.cli", "sweep", str(path), "--address",
                          os.environ["GAN3D_TEST_RAY_ADDRESS"]], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    files = _listing("s3://gan3d-test/sweeps/s3sweep")
    fs, root = filesystem("s3://gan3d-test/sweeps/s3sweep")
    with fs.open_input_file(f"{root}/trials.parquet") as f:
        trials = pq.read_table(f).to_pandas()
    assert len(trials) == 2 and (trials["status"] == "TERMINATED").all() and trials["best/swd"].notna().all()
    for run in trials["run_name"]:
        assert f"runs/{run}/metrics.parquet" in files
        assert any(f.startswith(f"runs/{run}/checkpoint_") and f.endswith("meta.json") for f in files)
    assert any(f.startswith("synthetic_") for f in files)  # the dataset every trial's workers read
    # rerunning the command restores Tune's state from the bucket: finished trials are not run again
    again = subprocess.run([sys.executable, "-m", "gan3d.cli", "sweep", str(path), "--address",
                            os.environ["GAN3D_TEST_RAY_ADDRESS"]], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    checkpoints = {f.split("/")[2] for f in files if f.startswith("runs/") and "/checkpoint_2" in f}
    assert {f.split("/")[2] for f in _listing("s3://gan3d-test/sweeps/s3sweep")
            if f.startswith("runs/") and "/checkpoint_2" in f} == checkpoints
    # the comparison report reads the sweep from the bucket
    rep = subprocess.run([sys.executable, "-m", "gan3d.cli", "report", "s3://gan3d-test/sweeps/s3sweep", "--out",
                          str(tmp_path / "r.html")], env=env, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert (tmp_path / "r.html").read_text().count("<tr") == 3  # header + 2 trials
