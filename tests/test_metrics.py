"""FID / KID / SWD against independent references."""
import numpy as np
import pytest
import scipy.linalg
import torch

from gan3d.metrics import main_metric
from gan3d.metrics.inception import FIDInception, InceptionWeightsMissing, load_inception, missing_message
from gan3d.metrics.stats import feature_stats, frechet_distance, kernel_distance
from gan3d.metrics.swd import laplacian_pyramid, swd


def test_frechet_distance_matches_scipy_on_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 16)) @ rng.standard_normal((16, 16)) * 0.5
    b = rng.standard_normal((4000, 16)) * 1.3 + 0.7
    mu1, s1 = feature_stats(a)
    mu2, s2 = feature_stats(b)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6)
    # closed form for isotropic gaussians: d * (sigma1 - sigma2)^2 + |mu1 - mu2|^2
    eye = np.eye(4)
    assert frechet_distance(np.zeros(4), eye, np.ones(4), 4 * eye) == pytest.approx(4 + 4 * (1 - 2) ** 2)


def test_kid_matches_the_direct_unbiased_mmd():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((50, 8)), rng.standard_normal((50, 8)) + 0.5
    k = lambda a, b: (a @ b.T / 8 + 1) ** 3  # noqa: E731
    m = 50
    kxx, kyy, kxy = k(y, y), k(x, x), k(y, x)  # kernel_distance draws fakes (first arg's partner) as x
    direct = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    assert kernel_distance(x, y, num_subsets=3, max_subset_size=50) == pytest.approx(direct, rel=1e-9)


def test_swd_is_zero_for_identical_sets_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(64, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    same = swd(a, a.clone())
    assert same["swd"] == pytest.approx(0.0, abs=1e-6) and set(same) == {"swd", "swd/32", "swd/16"}
    near = swd(a, (a.float() * 0.9 + 10).to(torch.uint8))["swd"]
    far = swd(a, (a.float() * 0.5 + 100).to(torch.uint8))["swd"]
    assert 0 < near < far


def test_laplacian_pyramid_reconstructs_the_image():
    x = torch.rand(2, 3, 32, 32)
    levels = laplacian_pyramid(x, 3)
    assert [l.shape[-1] for l in levels] == [32, 16, 8]
    from gan3d.metrics.swd import _blur
    rec = levels[-1]
    for band in reversed(levels[:-1]):
        up = torch.zeros(band.shape)
        up[:, :, ::2, ::2] = rec * 4
        rec = band + _blur(up)
    assert torch.allclose(rec, x, atol=1e-5)


def test_fid_inception_has_the_standard_key_names_and_feature_size(tmp_path, monkeypatch):
    net = FIDInception().eval()
    keys = set(net.state_dict())
    for k in ("Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.running_var", "Mixed_5b.branch_pool.conv.weight",
              "Mixed_6e.branch7x7dbl_5.conv.weight", "Mixed_7c.branch3x3dbl_3b.bn.bias", "fc.weight"):
        assert k in keys
    assert net.state_dict()["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    path = tmp_path / "w.pth"
    torch.save(net.state_dict(), path)
    monkeypatch.setenv("GAN3D_INCEPTION_WEIGHTS", str(path))
    loaded, sha = load_inception()
    assert len(sha) == 64
    with torch.no_grad():
        f = loaded(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert f.shape == (2, 2048)


def test_missing_weights_say_so_and_rank_by_swd(monkeypatch, tmp_path):
    monkeypatch.setenv("GAN3D_INCEPTION_WEIGHTS", str(tmp_path / "absent.pth"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(InceptionWeightsMissing, match="pt_inception-2015-12-05"):
        load_inception()
    assert "reporting SWD only" in missing_message()
    assert main_metric(["fid2k_full", "swd"], inception_available=False) == "swd"
    assert main_metric(["fid2k_full", "swd"], inception_available=True) == "fid2k_full"
