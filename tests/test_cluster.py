"""Cluster artefacts validated statically (no cloud is reachable), and the Ray Jobs API for real."""
import os
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

CLUSTER = ROOT / "cluster"


@pytest.mark.parametrize("name", ["aws/gan3d-gpu.yaml", "gcp/gan3d-gpu.yaml"])
def test_launcher_configs_pass_rays_schema(name):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((CLUSTER / name).read_text())
    validate_config(prepare_config(cfg))  # what `ray up` does: fill the provider's defaults, check Ray's schema
    broken = {**cfg, "available_node_types": {"head": {"node_config": {}}}}  # the check can fail
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
    assert cfg["head_node_type"] in cfg["available_node_types"]
    gpu = [t for t in cfg["available_node_types"] if t != cfg["head_node_type"]]
    assert gpu and cfg["max_workers"] >= cfg["available_node_types"][gpu[0]]["max_workers"]
    assert any("gan3d" in c for c in cfg["setup_commands"])
    # token auth: joining nodes fail with InvalidAuthToken unless they start in token mode with the same token
    assert "~/.ray/auth_token" in cfg["file_mounts"]
    assert all("RAY_AUTH_MODE=token" in c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
               if "ray start" in c)


def test_kuberay_manifests_have_the_required_fields():
    rc = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    assert rc["apiVersion"] == "ray.io/v1" and rc["kind"] == "RayCluster"
    workers = rc["spec"]["workerGroupSpecs"]
    assert workers and workers[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob-sweep.yaml").read_text())
    assert job["kind"] == "RayJob" and job["spec"]["entrypoint"].startswith("gan3d sweep ")
    assert job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]
    assert rc["spec"]["authOptions"]["mode"] == job["spec"]["rayClusterSpec"]["authOptions"]["mode"] == "token"
    sweep = job["spec"]["entrypoint"].split()[2]
    assert (ROOT / sweep).is_file()


def test_slurm_script_is_valid_bash_and_runs_a_sweep():
    script = CLUSTER / "slurm" / "gan3d-sweep.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "ray start --head" in text and "ray start --address" in text and "gan3d sweep" in text
    assert "ray stop" in text  # teardown
    assert "RAY_AUTH_MODE=token" in text and "RAY_AUTH_TOKEN_PATH" in text  # as tests/test_zz_multinode.py starts nodes


def test_jobs_api_submit_status_and_logs(ray_session):
    address = os.environ["GAN3D_TEST_DASHBOARD"]
    cmd = [sys.executable, "-m", "gan3d.cli", "submit", "--address", address, "--env", "GAN3D_MARK=42", "--",
           sys.executable, "-m", "gan3d.cli", "describe", str(ROOT / "experiments" / "smoke.yaml")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "generator:" in res.stdout and ": SUCCEEDED" in res.stdout
    job_id = res.stdout.split("submitted job ")[1].split()[0]
    st = subprocess.run([sys.executable, "-m", "gan3d.cli", "status", job_id, "--address", address],
                        capture_output=True, text=True)
    assert st.stdout.strip() == "SUCCEEDED"
    logs = subprocess.run([sys.executable, "-m", "gan3d.cli", "logs", job_id, "--address", address],
                          capture_output=True, text=True)
    assert "discriminator:" in logs.stdout
    bad = subprocess.run([sys.executable, "-m", "gan3d.cli", "status", "x", "--address", "http://127.0.0.1:9"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no Ray Jobs API there" in bad.stderr
