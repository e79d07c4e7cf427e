"""Known answers for the pure rendering functions."""
import math

import pytest
import torch

from gan3d.config import CameraConfig
from gan3d.draws import seeded
from gan3d.render import cameras, rays, triplane, volume


def random_angles(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.rand(n, generator=g) * 2 * math.pi - math.pi,
                        torch.rand(n, generator=g) * 2.8 + 0.17,
                        torch.rand(n, generator=g) * 0.6 - 0.3], -1)


def test_cam2world_is_orthonormal_at_radius_and_looks_at_origin():
    a = random_angles(64)
    m = cameras.cam2world_matrix(a, radius=2.7)
    R, o = m[:, :3, :3], m[:, :3, 3]
    assert torch.allclose(R.transpose(1, 2) @ R, torch.eye(3).expand(64, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(64), atol=1e-5)  # right-handed
    assert torch.allclose(o.norm(dim=-1), torch.full((64,), 2.7), atol=1e-5)
    forward = -R[:, :, 2]  # the camera looks down -z
    assert torch.allclose(forward, -o / o.norm(dim=-1, keepdim=True), atol=1e-5)


def test_seed_convention_origin_formula():
    yaw, pitch = 0.3, 1.1
    m = cameras.cam2world_matrix(torch.tensor([[yaw, pitch, 0.0]]), 1.5)
    expected = 1.5 * torch.tensor([math.sin(pitch) * math.cos(yaw), math.cos(pitch), math.sin(pitch) * math.sin(yaw)])
    assert torch.allclose(m[0, :3, 3], expected, atol=1e-6)
    assert m[0, 1, 1] > 0  # roll 0: camera up has a positive world-y component


def test_angles_round_trip_through_cam2world():
    a = random_angles(32, seed=3)
    back, radius = cameras.angles_from_cam2world(cameras.cam2world_matrix(a, 1.3))
    assert torch.allclose(radius, torch.full((32,), 1.3), atol=1e-5)
    assert torch.allclose(back, a, atol=1e-4)


@pytest.mark.parametrize("dist", ["uniform", "normal", "truncated_gaussian", "hybrid"])
def test_camera_samplers_stay_in_range_and_centre(dist):
    cfg = CameraConfig(dist=dist, yaw_mean=0.5, yaw_std=0.4, pitch_mean=1.4, pitch_std=0.2)
    a = cameras.sample_camera_angles(4000, cfg, seeded(0))
    assert a.shape == (4000, 3) and (a[:, 2] == 0).all()
    assert a[:, 0].abs().max() <= math.pi and a[:, 1].min() > 0 and a[:, 1].max() < math.pi
    assert abs(a[:, 0].mean() - 0.5) < 0.05 and abs(a[:, 1].mean() - 1.4) < 0.05
    if dist == "uniform":
        assert (a[:, 0] - 0.5).abs().max() <= 0.4 + 1e-6
    if dist == "truncated_gaussian":  # the first of 4 draws inside 2 std (all 4 outside: ~1e-5 of samples)
        assert ((a[:, 0] - 0.5).abs() > 0.8 + 1e-6).float().mean() < 1e-3


def test_spherical_uniform_is_uniform_in_cos_pitch_as_the_reference_draws_it():
    """v = (1 - cos pitch) / 2 uniform over (pitch_mean -+ pitch_std) / pi: equal-area on the full sphere for the
    Plants/Food settings (pitch pi/2 +- pi/2), and the reference's band elsewhere."""
    full = cameras.sample_camera_angles(20000, CameraConfig(dist="spherical_uniform", yaw_mean=0.0, yaw_std=math.pi,
                                                            pitch_mean=math.pi / 2, pitch_std=math.pi / 2), seeded(0))
    cos = torch.cos(full[:, 1])
    assert cos.min() < -0.99 and cos.max() > 0.99 and abs(cos.mean()) < 0.02 and abs(cos.std() - 1 / math.sqrt(3)) < 0.01
    assert full[:, 0].min() < -3.1 and full[:, 0].max() > 3.1
    band = cameras.sample_camera_angles(20000, CameraConfig(dist="spherical_uniform", pitch_mean=1.4, pitch_std=0.2),
                                        seeded(0))
    lo, hi = 1 - 2 * (1.4 + 0.2) / math.pi, 1 - 2 * (1.4 - 0.2) / math.pi
    cos = torch.cos(band[:, 1]).double()
    assert lo - 1e-6 <= cos.min() and cos.max() <= hi + 1e-6 and abs(cos.mean().item() - (lo + hi) / 2) < 0.01


def test_full_patch_renders_the_same_rays_as_the_full_image():
    full = rays.ray_directions(16, 12.0, batch=2)
    patch = rays.ray_directions(16, 12.0, torch.ones(2, 2), torch.zeros(2, 2), batch=2)
    assert torch.allclose(full, patch)


def test_ray_directions_span_the_field_of_view():
    d = rays.ray_directions(9, 60.0)[0].reshape(9, 9, 3)
    centre = d[4, 4]
    assert torch.allclose(centre, torch.tensor([0.0, 0.0, -1.0]), atol=1e-6)
    # the left-edge ray makes fov/2 with the axis; the top row points up (image y is down)
    assert math.isclose(math.degrees(math.acos(-d[4, 0, 2].item())), 30.0, rel_tol=1e-5)
    assert d[0, 4, 1] > 0 and d[8, 4, 1] < 0 and d[4, 0, 0] < 0


def test_half_scale_patch_at_offset_zero_covers_the_bottom_left_quarter():
    """The seed's NDC y points up: offset (0, 0) is the image's bottom-left corner."""
    full = rays.patch_grid(9)  # [1, 81, 2]
    half = rays.patch_grid(5, torch.full((1, 2), 0.5), torch.zeros(1, 2))
    assert torch.allclose(half.reshape(5, 5, 2), full.reshape(9, 9, 2)[4:, :5])
    up = rays.patch_grid(5, torch.full((1, 2), 0.5), torch.tensor([[0.0, 0.5]]))  # a larger o_y moves it up
    assert torch.allclose(up.reshape(5, 5, 2), full.reshape(9, 9, 2)[:5, :5])


def test_constant_density_gives_closed_form_alpha_and_the_last_sample_ends_the_ray():
    S, sigma_raw = 16, 0.3
    depths = torch.linspace(1.0, 2.0, S).expand(1, 4, S)
    sigma = torch.full((1, 4, S, 1), sigma_raw)
    out = volume.integrate(torch.rand(1, 4, S, 3), sigma, depths)
    alpha = 1 - math.exp(-math.log1p(math.exp(sigma_raw)) / (S - 1))  # softplus density times the bin width
    # without a background the last interval is 1e10 (the seed): its sample takes all the remaining light
    expected_w = torch.tensor([alpha * (1 - alpha) ** i for i in range(S - 1)] + [(1 - alpha) ** (S - 1)])
    assert torch.allclose(out["weights"][0, 0], expected_w, atol=1e-5)
    assert torch.allclose(out["opacity"], torch.ones(1, 4, 1), atol=1e-5)
    assert torch.allclose(out["final_transmittance"], torch.full((1, 4, 1), (1 - alpha) ** (S - 1)), atol=1e-5)


def test_two_sample_ray_matches_the_seed():
    """The issue's minimal case: depths [1.0, 1.1], raw density 0, colour 1."""
    depths = torch.tensor([[[1.0, 1.1]]])
    out = volume.integrate(torch.ones(1, 1, 2, 3), torch.zeros(1, 1, 2, 1), depths)
    assert torch.allclose(out["weights"][0, 0], torch.tensor([0.0670, 0.9330]), atol=1e-4)
    assert torch.allclose(out["rgb"], torch.ones(1, 1, 3), atol=1e-6)
    assert torch.allclose(out["depth"], (out["weights"] * depths).sum(-1, keepdim=True))  # plain weighted sum
    with_bg = volume.integrate(torch.ones(1, 1, 2, 3), torch.zeros(1, 1, 2, 1), depths, last_delta=1e-3)
    assert with_bg["opacity"].item() < 0.07 and abs(with_bg["final_transmittance"].item() - 0.933) < 1e-3


def test_weights_sum_to_at_most_one_and_zero_density_gives_background():
    g = torch.Generator().manual_seed(0)
    depths, _ = torch.sort(torch.rand(2, 50, 24, generator=g) + 1, dim=-1)
    out = volume.integrate(torch.rand(2, 50, 24, 3, generator=g), torch.randn(2, 50, 24, 1, generator=g) * 5, depths)
    assert (out["weights"] >= 0).all() and (out["opacity"] <= 1 + 1e-6).all()
    empty = volume.integrate(torch.rand(1, 3, 8, 3), torch.full((1, 3, 8, 1), -60.0), depths[:1, :3, :8])
    assert torch.allclose(empty["rgb"], torch.zeros(1, 3, 3), atol=1e-6)
    assert torch.allclose(empty["opacity"], torch.zeros(1, 3, 1), atol=1e-6)


def test_importance_samples_concentrate_on_the_surface():
    z = torch.linspace(1.0, 2.0, 32).expand(1, 1, 32)
    weights = torch.zeros(1, 1, 32)
    weights[..., 20] = 1.0
    fine = rays.importance_depths(z, weights, 64, deterministic=True)
    assert fine.shape == (1, 1, 64)
    near = ((fine - z[..., 20:21]).abs() < 2.5 / 31).float().mean()
    assert near > 0.8


def test_triplane_lookup_is_bilinear_and_averages_planes():
    planes = torch.zeros(1, 3, 1, 2, 2)
    planes[0, 0, 0] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])  # xy plane; other planes zero
    # align_corners=True (the seed): texels sit at +-1, so (0.5, -0.5) is a quarter of the way from row 0
    f = triplane.sample_triplane(planes, torch.tensor([[[0.0, 0.0, 0.7], [0.5, -0.5, 0.0], [-1.0, 1.0, 0.0]]]))
    assert torch.allclose(f[0, :, 0], torch.tensor([1.5 / 3, 1.25 / 3, 2.0 / 3]), atol=1e-6)


def test_stratified_depths_stay_in_their_bins():
    z = rays.stratified_depths((2, 10), 8, 1.0, 2.0, perturb=True, draws=seeded(0))
    centres = torch.linspace(1.0, 2.0, 8)
    assert ((z - centres).abs() <= 0.5 / 7 + 1e-6).all()
    assert z.min() >= 1.0 and z.max() <= 2.0  # jitter never leaves [ray_start, ray_end]
    assert (z[..., 0] - 1.0).abs().max() > 0 and (z[..., 0] - 1.0).max() <= 0.5 / 7 + 1e-6


def test_importance_samples_are_valid_for_all_zero_weights():
    z = torch.linspace(1.0, 2.0, 8).expand(2, 3, 8)
    fine = rays.importance_depths(z, torch.zeros(2, 3, 8), 8, deterministic=True)
    mids = 0.5 * (z[..., 1:] + z[..., :-1])
    assert torch.isfinite(fine).all() and torch.allclose(fine[0, 0], torch.linspace(mids[0, 0, 0], mids[0, 0, -1], 8), atol=1e-5)
