"""Cluster artefacts validated statically (no cloud is reachable), and the Ray Jobs API for real."""
import os
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

pytestmark = pytest.mark.slow  # Ray clusters and real training runs: `pytest -m 'not slow'` skips them

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


def _kuberay_node_types(spec: dict) -> dict:
    """What Ray's own KubeRay autoscaler makes of a RayCluster spec (as it reads the CR in a cluster), checked
    against Ray's autoscaler schema: kubectl-free validation of the groups, replicas and container resources."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
    from ray.autoscaler._private.util import validate_config

    cfg = _derive_autoscaling_config_from_ray_cr({"apiVersion": "ray.io/v1", "kind": "RayCluster",
                                                  "metadata": {"name": "gan3d", "namespace": "default"}, "spec": spec})
    validate_config(cfg)
    return cfg["available_node_types"]


def test_kuberay_manifests_parse_as_rays_autoscaler_reads_them():
    rc = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob-sweep.yaml").read_text())
    assert rc["apiVersion"] == "ray.io/v1" and rc["kind"] == "RayCluster" and job["kind"] == "RayJob"
    for spec, workers in ((rc["spec"], (0, 4)), (job["spec"]["rayClusterSpec"], (2, 2))):
        types_ = _kuberay_node_types(spec)
        gpu = types_["gpu-8x"]
        assert gpu["resources"]["GPU"] == 8 and gpu["resources"]["CPU"] >= 8  # from the containers' limits
        assert (gpu["min_workers"], gpu["max_workers"]) == workers
        assert types_["headgroup"]["resources"].get("GPU", 0) == 0  # the driver's node trains nothing
    broken = {**rc["spec"], "workerGroupSpecs": [{**rc["spec"]["workerGroupSpecs"][0], "minReplicas": 5}]}
    with pytest.raises(ValueError, match="max_workers"):  # more workers required than allowed: refused
        _kuberay_node_types(broken)
    assert job["spec"]["entrypoint"].startswith("gan3d sweep ")
    assert rc["spec"]["authOptions"]["mode"] == job["spec"]["rayClusterSpec"]["authOptions"]["mode"] == "token"
    assert (ROOT / job["spec"]["entrypoint"].split()[2]).is_file()


def test_slurm_script_is_valid_bash_and_starts_nodes_with_token_auth():
    """Syntax and node commands; tests/test_slurm.py runs it against stand-ins for srun and scontrol."""
    script = CLUSTER / "slurm" / "gan3d-sweep.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "ray start --head" in text and "ray start --address" in text and "gan3d sweep" in text
    assert "RAY_AUTH_MODE=token" in text and "RAY_AUTH_TOKEN_PATH" in text  # as tests/test_multinode.py starts nodes


def test_jobs_api_submit_status_and_logs(one_node_ray):
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
