"""training.triplane_kernel: gan3d's C++ tri-plane lookup gives grid_sample's features and plane gradients."""
import pytest
import torch

from gan3d.config import replace
from gan3d.errors import ConfigError
from gan3d.nn import build_generator, use_triplane_kernel
from gan3d.render import triplane, triplane_kernel


@pytest.fixture(scope="module")
def kernel():
    triplane_kernel.load()  # the first time on a machine this builds it (~10-30 s)
    return triplane_kernel


def _planes_and_points(channels_last: bool):
    g = torch.Generator().manual_seed(0)
    planes = torch.randn(2, 3, 5, 7, 9, generator=g)  # H != W and odd C: a swapped axis or stride shows
    if channels_last:
        planes = triplane_kernel.channels_last(planes)
    points = torch.rand(2, 300, 3, generator=g) * 2.6 - 1.3  # a share outside the cube: zeros padding
    points[0, :4] = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 0.3], [0.999, -0.999, 1.0]])
    return planes, points


@pytest.mark.parametrize("channels_last", [False, True])
def test_kernel_gives_grid_samples_features_and_plane_gradients(kernel, channels_last):
    planes, points = _planes_and_points(channels_last)
    grad_out = torch.randn(2, 300, 5, generator=torch.Generator().manual_seed(1))

    def lookup(fn):
        p = planes.detach().requires_grad_()
        feats = fn(p, points)
        feats.backward(grad_out)
        return feats.detach(), p.grad

    ref, ref_grad = lookup(triplane.sample_triplane)
    out, grad = lookup(kernel.sample)
    assert (ref == 0).all(-1).any() and ref.abs().max() > 0.1  # some points read only zeros, others features
    assert torch.allclose(out, ref, atol=1e-6)
    assert grad.shape == planes.shape and grad.stride() == planes.stride()  # the gradient keeps the planes' layout
    assert torch.allclose(grad, ref_grad, atol=1e-6)


def test_kernel_differentiates_the_planes_only(kernel):
    planes, points = _planes_and_points(False)
    with pytest.raises(ValueError, match="points require grad"):
        kernel.sample(planes, points.requires_grad_())


def test_trained_generator_renders_the_same_with_the_kernel(kernel, smoke_cfg):
    """use_triplane_kernel switches the trained G (planes handed over channels-last, the kernel's lookup): the same
    patch image and the same gradients of every synthesis and decoder parameter as grid_sample."""
    cfg = replace(smoke_cfg, ["training.triplane_kernel=true"])
    G = build_generator(cfg).requires_grad_(True)
    z, angles = torch.randn(2, G.cfg.z_dim), torch.tensor([[0.3, 1.4, 0.0], [-0.2, 1.7, 0.0]])
    patch_px = cfg.training.patch.resolution

    def image_and_grads(seed):
        torch.manual_seed(seed)  # the same jittered depths and importance samples both times
        planes = G.synthesis(G.map(z, None, angles), "const")
        img = G.render_planes(planes, G.map(z, None, angles), angles, patch_px)["image"]
        return img.detach(), planes.stride(), torch.autograd.grad(img.square().sum(), list(G.parameters()),
                                                                  allow_unused=True)

    ref, ref_stride, ref_grads = image_and_grads(3)
    use_triplane_kernel(cfg, G)
    assert G.triplane_kernel
    out, stride, grads = image_and_grads(3)
    assert stride != ref_stride and stride[2] == 1  # the synthesis now hands the kernel contiguous texels
    assert torch.allclose(out, ref, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        if r is not None:
            assert torch.allclose(g, r, rtol=1e-4, atol=1e-5 * r.abs().max().item())


def test_kernel_that_cannot_build_is_one_config_error(kernel, smoke_cfg, tmp_path, monkeypatch):
    bad = tmp_path / "broken.cpp"
    bad.write_text("this is not C++\n")
    monkeypatch.setattr(triplane_kernel, "_SOURCE", bad)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))  # a real build, away from the working one
    triplane_kernel.load.cache_clear()
    try:
        G = build_generator(smoke_cfg)
        with pytest.raises(ConfigError) as e:
            use_triplane_kernel(replace(smoke_cfg, ["training.triplane_kernel=true"]), G)
    finally:
        triplane_kernel.load.cache_clear()
    assert str(e.value).startswith("key 'training.triplane_kernel' = true: the C++ kernel cannot be built here (")
    assert "\n" not in str(e.value) and not G.triplane_kernel
