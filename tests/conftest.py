"""Shared fixtures: tiny configs, a synthetic dataset, and one local Ray instance per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config):
    """The test session's environment, set once before collection (and inherited by the local Ray it starts)."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # faster Train controller polling
    # Train's preemption watcher (one more actor process per run) polls for node drains, which no test makes
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # one cache per xdist worker (gw0, gw1, ...): two workers never fill the same entry at once
    os.environ.setdefault("GAN3D_CACHE", f"/tmp/gan3d-test-cache/{os.environ.get('PYTEST_XDIST_WORKER', 'main')}")
    # The nodes' own credentials, as a cluster's nodes have them (gan3d forwards no secret to workers): the local S3
    # server (moto) accepts any; set before the session's Ray starts, so its workers inherit them.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")


ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.yaml"

# A smoke run small enough for a test: a few ticks of 8 images, SWD on 32 images.
TINY = ["training.kimg=0.048", "training.tick_kimg=0.016", "training.snap_kimg=0.016",
        "training.metric_kimg=0.032", "training.image_kimg=0.032", "metrics.num_fakes=32",
        "dataset.synthetic_size=64", "logging.grid_size=4", "logging.video_frames=4"]


@pytest.fixture(scope="session")
def smoke_cfg():
    from gan3d.config import load_config
    return load_config(SMOKE)


@pytest.fixture(scope="session")
def synthetic_zip(tmp_path_factory, smoke_cfg):
    from gan3d.data import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp("data") / "syn.zip", 48, 32, smoke_cfg.dataset.camera, seed=1)


def _start_ray():
    import ray

    ctx = ray.init(address="local", num_cpus=4, namespace="gan3d", include_dashboard=True, log_to_driver=False)
    os.environ["GAN3D_TEST_DASHBOARD"] = f"http://{ctx.dashboard_url}"
    os.environ["GAN3D_TEST_RAY_ADDRESS"] = ctx.address_info["gcs_address"]  # for subprocess drivers


@pytest.fixture(scope="session")
def _ray_for_the_session():
    """Shuts the shared local Ray down when the session ends (whichever test started it last)."""
    import ray

    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def one_node_ray(_ray_for_the_session):
    """A one-node local Ray (4 CPUs) shared by the test modules that need one (dashboard on: Train's cleanup needs the state API),
    started by the first of them, and again after a module that shut it down (the multi-node modules do, to run
    their own cluster without a third Ray on a 2-core machine): module order does not matter."""
    import ray

    if not ray.is_initialized():
        _start_ray()
    return ray


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the tests' ids
def pytest_collection_modifyitems(items):
    """A test that needs the shared Ray is slow wherever it lives (see pyproject's markers). Under README's
    `-n 2 --dist loadgroup` the tests on the shared Ray form one xdist group, run in turn by one worker, while the
    other worker runs the rest, the two-node loopback cluster (a group of its own: it has its own ports, agents
    included) and the SLURM script's own Ray: the shared-Ray tests mostly wait on process start-ups and leave a
    core free."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "one_node_ray" in names:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group("ray"))
        elif "two_node_cluster" in names:
            item.add_marker(pytest.mark.xdist_group("loopback_cluster"))
