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


# ---------------------------------------------------------------------------------------- the reference's protocol

def test_tf1_resize_samples_at_i_times_in_over_out_without_half_pixel_offset():
    from gan3d.metrics.inception import tf1_resize_bilinear
    x = torch.tensor([[[[10.0, 20.0], [30.0, 40.0]]]])
    up = tf1_resize_bilinear(x, 4)  # rows and columns sample 0, 0.5, 1, 1.5 (clamped): a, (a+b)/2, b, b
    row = torch.tensor([10.0, 15.0, 20.0, 20.0])
    assert torch.equal(up[0, 0, 0], row) and torch.equal(up[0, 0, 1], row + 10)
    assert torch.equal(up[0, 0, 2], row + 20) and torch.equal(up[0, 0, 3], row + 20)
    y = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(tf1_resize_bilinear(y, 2)[0, 0], torch.tensor([[0.0, 2.0], [8.0, 10.0]]))  # 0 and 2 of 4
    z = torch.rand(2, 3, 299, 299)  # at 299 px it is the identity, as torch's half-pixel bilinear is there
    assert torch.equal(tf1_resize_bilinear(z, 299), z)
    assert torch.allclose(torch.nn.functional.interpolate(z, (299, 299), mode="bilinear", align_corners=False), z)
    # where they differ: 64 -> 299 px
    w = torch.rand(1, 3, 64, 64)
    assert (tf1_resize_bilinear(w, 299) - torch.nn.functional.interpolate(w, (299, 299), mode="bilinear")).abs().max() > 0.01


def test_the_detector_input_is_x_minus_128_over_128_from_uint8():
    from gan3d.metrics.inception import prepare
    img = torch.tensor([0, 128, 255], dtype=torch.uint8).reshape(1, 3, 1, 1).expand(1, 3, 299, 299)
    out = prepare(img)
    assert out.shape == (1, 3, 299, 299)
    assert out[0, :, 0, 0].tolist() == [-1.0, 0.0, 127 / 128]
    with pytest.raises(ValueError, match="uint8"):
        prepare(img.float())
    from gan3d.metrics.inception import tf1_resize_bilinear
    small = (torch.rand(2, 3, 64, 64) * 255).to(torch.uint8)
    assert torch.equal(prepare(small), (tf1_resize_bilinear(small.float(), 299) - 128) / 128)


def test_covariance_is_divided_by_n_as_the_reference_does():
    mu, cov = feature_stats(np.array([[0.0, 0.0], [2.0, 4.0]]))
    assert mu.tolist() == [1.0, 2.0] and cov.tolist() == [[1.0, 2.0], [2.0, 4.0]]  # squared deviations over N = 2


@pytest.fixture(scope="module")
def small_zip(tmp_path_factory, smoke_cfg):
    """8 posed images: FID's Inception runs on every real at 299 px, so keep them few."""
    from gan3d.data import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp("fid") / "small.zip", 8, 32, smoke_cfg.dataset.camera, seed=2)


@pytest.fixture()
def random_detector(tmp_path, monkeypatch):
    torch.manual_seed(0)
    path = tmp_path / "weights.pth"
    torch.save(FIDInception().state_dict(), path)
    monkeypatch.setenv("GAN3D_INCEPTION_WEIGHTS", str(path))
    monkeypatch.setenv("GAN3D_CACHE", str(tmp_path / "cache"))
    return path


def _tiny_g(smoke_cfg):
    from gan3d.nn import build_generator
    torch.manual_seed(0)
    G = build_generator(smoke_cfg).eval()
    with torch.no_grad():  # noise strengths start at 0: make the synthesis noise show
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    return G


def test_fakes_draw_random_noise_and_ray_samples_reproducibly_per_evaluation(smoke_cfg, synthetic_zip):
    from gan3d.data import open_dataset
    from gan3d.metrics import conditioning, generate, to_uint8
    G = _tiny_g(smoke_cfg)
    pool = conditioning(open_dataset(str(synthetic_zip), 32))
    calls = []
    G.register_forward_pre_hook(lambda m, args: calls.append(args))
    a = generate(G, 4, smoke_cfg, "cpu", seed=3, pool=pool)
    assert torch.equal(a, generate(G, 4, smoke_cfg, "cpu", seed=3, pool=pool))  # seeded: reproducible
    assert not torch.equal(a, generate(G, 4, smoke_cfg, "cpu", seed=4, pool=pool))
    z, c, angles = calls[0][:3]
    with torch.no_grad():  # the same latents and cameras with constant noise and evenly spaced samples
        fixed = to_uint8(G(z, c, angles, noise_mode="const", stochastic=False))
    assert (fixed.int() - a.int()).abs().max() > 2  # ... is another image: the noise and samples are random


def test_fid_measures_every_unflipped_real_and_fakes_from_unflipped_poses(smoke_cfg, small_zip, random_detector):
    from gan3d.data import open_dataset
    from gan3d.metrics import evaluate, protocol_line
    G = _tiny_g(smoke_cfg)
    mirrored = open_dataset(str(small_zip), 32, mirror=True)  # as training reads it
    assert len(mirrored) == 16
    cameras = []
    G.register_forward_pre_hook(lambda m, args: cameras.append(args[2].clone()))
    values, protocols = evaluate(G, mirrored, smoke_cfg, ["fid2k_full"], num_fakes=8, dataset_id="syn")
    p = protocols["fid2k_full"]
    assert p["num_reals"] == 8 and p["mirror"] is False and values["fid2k_full"] > 0
    assert p["preparation"].startswith("tf1-bilinear-299") and p["covariance"] == "divided by N"
    unflipped = torch.as_tensor(mirrored.with_mirror(False).all_angles())
    flipped = torch.as_tensor(mirrored.all_angles())[8:]
    used = torch.cat(cameras)
    assert len(used) == 8 and all((unflipped == c).all(1).any() for c in used)
    assert not any((flipped == c).all(1).any() for c in used)
    _, mirrored_protocols = evaluate(G, mirrored, smoke_cfg, ["fid2k_full"], num_fakes=8, dataset_id="syn",
                                     mirror=True)
    assert mirrored_protocols["fid2k_full"]["num_reals"] == 16  # the switch, said in the protocol
    assert "NOT the reference's protocol" in protocol_line("fid2k_full", mirrored_protocols["fid2k_full"])
    assert protocol_line("fid2k_full", p).startswith("fid2k_full: the reference's protocol")


def test_fid_on_a_parquet_dataset(smoke_cfg, small_zip, random_detector, tmp_path):
    from gan3d.data import open_dataset
    from gan3d.data.convert import convert
    from gan3d.metrics import evaluate
    convert(str(small_zip), str(tmp_path / "shards"), shard_size=3)
    ds = open_dataset(str(tmp_path / "shards"), 32, mirror=True)
    assert len(ds) == 8
    values, protocols = evaluate(_tiny_g(smoke_cfg), ds, smoke_cfg, ["fid2k_full", "kid2k_full"], num_fakes=4,
                                 dataset_id="shards")
    assert protocols["fid2k_full"]["num_reals"] == 8 and np.isfinite(values["fid2k_full"])


def test_the_real_statistics_cache_key_carries_the_preparation(smoke_cfg, small_zip, random_detector, tmp_path):
    from gan3d.data import open_dataset
    from gan3d.metrics import PREPARATION, evaluate
    evaluate(_tiny_g(smoke_cfg), open_dataset(str(small_zip), 32), smoke_cfg, ["fid2k_full"], num_fakes=4,
             dataset_id="syn")
    cached = list((tmp_path / "cache" / "stats").glob("*.npz"))
    assert len(cached) == 1
    import hashlib
    from gan3d.storage import file_sha256
    key = f"syn|32|mirror=False|{PREPARATION}|{file_sha256(random_detector)}"
    assert cached[0].stem == hashlib.sha256(key.encode()).hexdigest()[:16]


def test_a_torchscript_detector_runs_only_behind_its_pin_and_a_pickle_never(tmp_path, monkeypatch):
    from gan3d.errors import ConfigError
    from gan3d.storage import file_sha256

    class Tiny(torch.nn.Module):
        def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            return images.float().mean(dim=[2, 3]).repeat(1, 4)

    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(Tiny()), str(path))
    monkeypatch.setenv("GAN3D_INCEPTION_WEIGHTS", str(path))
    sha = file_sha256(path)
    with pytest.raises(ConfigError, match=f"metrics.detector_sha256.*{sha}"):
        load_inception()
    with pytest.raises(ConfigError, match="the pin is 00ff"):
        load_inception(pin="00ff")
    net, got = load_inception(pin=sha)
    assert got == sha and net(torch.full((2, 3, 8, 8), 4, dtype=torch.uint8)).shape == (2, 12)
    marker = tmp_path / "ran"
    pkl = tmp_path / "inception-2015-12-05.pkl"
    import pickle

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    pkl.write_bytes(pickle.dumps(Boom()))
    monkeypatch.setenv("GAN3D_INCEPTION_WEIGHTS", str(pkl))
    with pytest.raises(ConfigError, match="pickled detector is not opened.*inception-2015-12-05.pt"):
        load_inception()
    assert not marker.exists()
