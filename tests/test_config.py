import dataclasses

import pytest

from gan3d.config import load_config, to_dict, from_dict
from gan3d.errors import ConfigError
from conftest import ROOT, SMOKE


@pytest.mark.parametrize("name", ["smoke", "ffhq512", "cats256", "plants256", "food256", "objects64", "bench_ref"])
def test_presets_load_and_mirror_the_seed(name):
    cfg = load_config(ROOT / "experiments" / f"{name}.yaml")
    assert cfg.run.name == name
    if name == "ffhq512":
        c = cfg.dataset.camera
        assert (cfg.dataset.resolution, c.fov, c.ray_start, c.ray_end) == (512, 12.0, 0.88, 1.12)
        assert cfg.model.generator.render.cube_scale == 0.2 and cfg.training.patch.min_scale == 0.125
    if name in ("plants256", "food256"):
        assert cfg.dataset.camera.fov == 30.0 and cfg.model.generator.render.white_back
        assert cfg.model.generator.render.cube_scale == 0.475
        assert cfg.dataset.c_dim == {"plants256": 198, "food256": 10}[name]


def test_overrides_apply_with_types():
    cfg = load_config(SMOKE, ["training.gamma=0.3", "training.patch.distribution=uniform", "run.workers=2"])
    assert cfg.training.gamma == 0.3 and cfg.training.patch.distribution == "uniform" and cfg.run.workers == 2
    assert from_dict(to_dict(cfg)) == cfg


def test_config_is_frozen():
    cfg = load_config(SMOKE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.training.gamma = 1.0


@pytest.mark.parametrize("override, expected", [
    ("training.gama=0.1", "unknown key 'training.gama'; valid keys here: augment, batch"),
    ("training.gamma=abc", "training.gamma"),
    ("training.patch.resolution=64", "training.patch.resolution' = 64 is not allowed: expected <= dataset.resolution (32)"),
    ("training.patch.min_scale=1.5", "training.patch.min_scale' = 1.5 is not allowed: expected in [training.patch.resolution / dataset.resolution (0.5), 1]"),
        ("training.patch.min_scale=0.25", "training.patch.min_scale' = 0.25 is not allowed: expected in [training.patch.resolution / dataset.resolution (0.5)"),
    ("training.patch.beta_end=0", "training.patch.beta_end' = 0.0 is not allowed: expected > 0"),
    ("training.gamma=-1", "training.gamma' = -1.0 is not allowed: expected >= 0"),
    ("dataset.resolution=48", "dataset.resolution' = 48 is not allowed: expected a power of two"),
    ("dataset.camera.dist=sphere", "one of dataset, spherical_uniform, uniform, normal"),
    ("training.gamma", "expected key=value"),
    ("run.storage_path=ftp://host/runs", "an object-store URI (s3://, gs://"),
    ("run.placement_strategy=RANDOM", "PACK, SPREAD, STRICT_PACK or STRICT_SPREAD"),
])
def test_invalid_configs_name_key_value_and_allowed(override, expected):
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, [override])
    assert expected in str(e.value)


def _ruled_fields(node, prefix=""):
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            yield from _ruled_fields(value, f"{prefix}{f.name}.")
        elif "rule" in f.metadata:
            yield f"{prefix}{f.name}", f.metadata["rule"], value


def test_every_declared_rule_is_enforced_under_its_own_key():
    """The constraints live beside their fields (gan3d.config.schema); validation finds each one by itself."""
    from gan3d.config import set_values

    cfg = load_config(SMOKE)
    ruled = list(_ruled_fields(cfg))
    assert len(ruled) > 50  # every range and choice of the schema
    for key, rule, value in ruled:
        bad = (["nonsense"] if rule.each else []) if isinstance(value, list) else \
            "ftp://nonsense" if isinstance(value, str) else type(value)(-1000000)
        with pytest.raises(ConfigError) as e:
            set_values(cfg, {key: bad})
        assert f"key '{key}' = " in str(e.value) and f"expected {rule.allowed}" in str(e.value), (key, str(e.value))


def test_the_batch_split_is_checked_in_one_place_with_the_workers_named():
    from gan3d.config import check_batch

    cfg = load_config(SMOKE, ["training.batch=8", "training.batch_gpu=4"])
    check_batch(cfg, 2)
    with pytest.raises(ConfigError, match=r"'training.batch' = 8 .* multiple of the number of workers \(run.workers = 3\)"):
        check_batch(cfg, 3)
    with pytest.raises(ConfigError, match=r"'training.batch_gpu' = 4 .* divisor of the per-worker batch 2"):
        check_batch(cfg, 4)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="experiment file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("trainig:\n  gamma: 1\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: unknown key 'trainig'; valid keys here: dataset, logging"):
        load_config(unknown)


def test_programmatic_values_keep_their_types():
    from gan3d.config import set_values
    cfg = set_values(load_config(SMOKE), {"run.name": "55863_00000", "training.gamma": 1, "logging.tags": ["a=1"]})
    assert cfg.run.name == "55863_00000" and cfg.training.gamma == 1.0 and cfg.logging.tags == ["a=1"]
    with pytest.raises(ConfigError, match="training.gama"):
        set_values(cfg, {"training.gama": 1})


def test_min_scale_follows_the_resolutions_unless_set():
    """EpiGRAF: min_scale = patch / image resolution; changing a resolution must not leave a stale value."""
    assert load_config(ROOT / "experiments" / "ffhq512.yaml", ["dataset.resolution=256"]).training.patch.min_scale == 0.25
    assert load_config(SMOKE, ["training.patch.resolution=8"]).training.patch.min_scale == 0.25
    assert load_config(SMOKE, ["training.patch.min_scale=0.75"]).training.patch.min_scale == 0.75
    # the seed's EMA half-life: batch x 0.3125 kimg
    assert load_config(ROOT / "experiments" / "ffhq512.yaml").training.ema_kimg == 20.0
    assert load_config(ROOT / "experiments" / "ffhq512.yaml", ["training.batch=32"]).training.ema_kimg == 10.0
