"""The lean autograd functions (gan3d.nn.lean) against PyTorch's plain ops: values, first-order gradients of
every input, second order where R1 needs it; and what they save (gan3d bench --memory)."""
import math

import pytest
import torch

from gan3d.nn import lean, layers
from gan3d.render import triplane


@pytest.fixture
def plain():
    """Run the block with PyTorch's own ops (lean.use(False)), restoring the lean ones after."""
    def run(fn, *args):
        lean.use(False)
        try:
            return fn(*args)
        finally:
            lean.use(True)
    return run


def grads(out, inputs, seed=0):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad(out, inputs, g, create_graph=True, allow_unused=True)


def close(a, b, rtol=1e-5):
    scale = b.abs().max().clamp(min=1e-12)
    return float(((a - b).abs().max() / scale).detach()) < rtol


@pytest.mark.parametrize("act,clamp", [("lrelu", None), ("lrelu", 0.3), ("linear", 0.3)])
def test_bias_act_matches_pytorch_to_second_order(plain, act, clamp):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 6, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)

    def run():
        y = layers.bias_act(x, b, act, clamp=clamp)
        gx, gb = grads(y, [x, b])
        # R1: the gradient's own gradient (a penalty on the input gradient, differentiated again)
        ggx, ggb = torch.autograd.grad(gx.square().sum() + (gx * x).sum(), [x, b], allow_unused=True)
        return y, gx, gb, ggx
    lean_out, ref_out = run(), plain(run)
    for a, r in zip(lean_out, ref_out):
        assert close(a, r, 1e-12), (a - r).abs().max()
    # the lean node keeps one tensor: its output
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = layers.bias_act(x * 1.0, b, act, clamp=clamp)
    assert len([t for t in saved if t.numel() == y.numel()]) == 1


@pytest.mark.parametrize("up,demodulate,noise", [(1, True, True), (2, True, True), (1, False, False)])
def test_a_synthesis_layer_matches_the_plain_composition(plain, up, demodulate, noise):
    torch.manual_seed(0)
    conv = layers.ModulatedConv(6, 5, 8, kernel_size=3 if demodulate else 1, up=up,
                                activation="lrelu" if demodulate else "linear", demodulate=demodulate,
                                conv_clamp=1.0)  # a clamp that bites
    conv.double()
    x = torch.randn(3, 6, 7, 7, dtype=torch.float64, requires_grad=True)
    code = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    strength = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    n = torch.randn(3, 1, 7 * up, 7 * up, dtype=torch.float64) if noise else None
    params = [x, code, strength, *conv.parameters()]

    def run():
        y = conv(x, code, n * strength if noise else None)
        return (y, *torch.autograd.grad(y, params, torch.cos(torch.arange(y.numel(), dtype=torch.float64)).view_as(y),
                                        allow_unused=True))
    lean_out, ref_out = run(), plain(run)
    assert (lean_out[0].abs() == 1.0).any()  # some outputs clamped
    for i, (a, r) in enumerate(zip(lean_out, ref_out)):
        if r is None:
            assert a is None or not a.abs().max() > 0
            continue
        assert close(a, r, 1e-10), (i, (a - r).abs().max())


def test_a_synthesis_layer_saves_its_input_and_output_only():
    torch.manual_seed(0)
    conv = layers.ModulatedConv(8, 8, 8, up=2)
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    code = torch.randn(2, 8)
    big = 2 * 8 * 32 * 32  # one output map
    for enabled, most in ((True, 2), (False, 4)):
        lean.use(enabled)
        try:
            storages = set()

            def pack(t):
                if t.numel() >= 2 * 8 * 16 * 16:  # activation maps, not weights or styles
                    storages.add(t.untyped_storage().data_ptr())
                return t
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                y = conv(x * 1.0, code, torch.randn(2, 1, 32, 32) * 0.1)
        finally:
            lean.use(True)
        assert y.numel() == big
        assert (len(storages) <= most) if enabled else (len(storages) >= most), (enabled, len(storages))


def test_the_triplane_lookup_keeps_no_planes_and_matches_grid_sample(plain):
    torch.manual_seed(0)
    planes = torch.randn(2, 3, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    points = torch.rand(2, 50, 3, dtype=torch.float64) * 2.2 - 1.1  # some outside the cube: zeros

    def run():
        f = triplane.sample_triplane(planes, points)
        return (f, *grads(f, [planes]))
    for a, r in zip(run(), plain(run)):
        assert close(a, r, 1e-12)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        triplane.sample_triplane(planes * 1.0, points)
    assert not any(t.numel() >= planes.numel() for t in saved)
    fitted = points.clone().requires_grad_()  # positions that need a gradient: PyTorch's op, both gradients
    gp, gq = grads(triplane.sample_triplane(planes, fitted), [planes, fitted])
    assert gq is not None and gq.abs().max() > 0


def test_bench_memory_reports_per_module_and_lean_saves_at_least_half(smoke_cfg):
    from gan3d.tools.bench_memory import saved_bytes

    lean_run = saved_bytes(smoke_cfg, batch=2)
    lean.use(False)
    try:
        plain_run = saved_bytes(smoke_cfg, batch=2)
    finally:
        lean.use(True)
    G = plain_run.largest
    assert {"G mapping", "G decoder"} <= set(plain_run.phases[G])
    assert any(k.startswith("G synthesis") for k in plain_run.phases[G])
    assert any(k.startswith("D block") for k in plain_run.phases[G])
    assert "R1 double backward" in plain_run.phases["Dreg"] and plain_run.phases["Dreg"]["R1 double backward"] > 0
    ratio = plain_run.total(G) / lean_run.total(lean_run.largest)
    assert ratio >= 1.8, (ratio, "\n".join(plain_run.lines() + lean_run.lines()))
    assert math.isfinite(ratio)
