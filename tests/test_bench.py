"""gan3d bench: it runs the real training step and reports consistent numbers."""
import json
import subprocess
import sys

import pytest

from gan3d.tools import bench
from gan3d.tools.bench_memory import plan_batch
from conftest import SMOKE


def test_bench_train_reports_throughput_shares_and_paths(smoke_cfg, capfd):
    res = bench.bench_train(smoke_cfg, iters=2, warmup=1)
    assert "profiler_start" not in capfd.readouterr().err  # the profiler's C++ log lines stay off the terminal
    assert res.img_per_s > 0 and abs(res.sec_per_kimg - 1000 / res.img_per_s) < 1e-6
    assert res.peak_memory_gb > 0 and set(res.paths) >= {"modulated_conv", "upfirdn2d", "triplane_sample", "cpu_malloc"}
    assert res.paths["triplane_sample"].startswith("grid_sample")  # training.triplane_kernel is off in the smoke run
    assert set(res.shares) == set(bench.SCOPES) and abs(sum(res.shares.values()) - 1) < 1e-6
    assert res.shares["gan3d::generator"] > 0 and res.shares["gan3d::backward"] > 0


def test_bench_cli_generate_json_and_plan():
    out = subprocess.run([sys.executable, "-m", "gan3d.cli", "bench", str(SMOKE), "--mode", "generate", "--iters", "1",
                          "--json"], capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    assert data["mode"] == "generate" and data["img_per_s"] > 0
    plan = plan_batch(__import__("gan3d").load_config(SMOKE), budget_gb=1e6)
    assert plan["batch_gpu"] == 8 and plan["accumulation"] == 1
    assert plan_batch(__import__("gan3d").load_config(SMOKE), budget_gb=1e-6)["batch_gpu"] == 0


def test_fast_paths_equal_the_reference_ops_on_random_inputs():
    import torch
    from gan3d.nn import layers, resample

    g = torch.Generator().manual_seed(0)
    f = resample.fir_filter()
    saved = resample.FAST_RESAMPLE, layers.BATCHED_MODCONV
    try:
        for shape in [(2, 3, 8, 8), (1, 5, 4, 4), (3, 2, 16, 16)]:
            x = torch.randn(*shape, generator=g)
            resample.FAST_RESAMPLE = False
            ref = resample.upsample2d(x, f), resample.downsample2d(x, f)
            resample.FAST_RESAMPLE = True
            fast = resample.upsample2d(x, f), resample.downsample2d(x, f)
            for a, b in zip(ref, fast):
                assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6)
        x, w, s = torch.randn(4, 6, 9, 9, generator=g), torch.randn(7, 6, 3, 3, generator=g), torch.randn(4, 6, generator=g)
        for demod, up in ((True, 1), (False, 1), (True, 2)):
            layers.BATCHED_MODCONV = False
            a = layers.modulated_conv2d(x, w, s, f, demod, 1, up)
            layers.BATCHED_MODCONV = True
            b = layers.modulated_conv2d(x, w, s, f, demod, 1, up)
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())
    finally:
        resample.FAST_RESAMPLE, layers.BATCHED_MODCONV = saved


@pytest.mark.slow
def test_scaling_over_two_gloo_processes_meets_by_file_not_by_port():
    from gan3d.config import load_config

    rate, efficiency = bench.bench_scaling(load_config(SMOKE, ["training.batch=4"]), workers=2, iters=1)
    assert rate > 0 and 0 < efficiency < 2
