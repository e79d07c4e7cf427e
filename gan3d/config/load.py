"""Loading an experiment: defaults <- YAML <- overrides, merged with OmegaConf, derived values filled, frozen and
validated; every failure one ConfigError line naming the source, the key and what is allowed."""
from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from gan3d.config.schema import ExperimentConfig
from gan3d.errors import ConfigError


def _valid_keys(schema: Any, dotted: str) -> list[str]:
    node = schema
    for part in [p for p in dotted.split(".")[:-1] if p]:
        node = getattr(node, part, None)
        if node is None or not is_dataclass(node):
            return []
    return sorted(f.name for f in fields(node)) if is_dataclass(node) else []


def merge(base, other, source: str, schema: Any = None):
    """OmegaConf.merge with errors as one ConfigError line naming the source, the key and the valid keys of
    `schema` (a dataclass instance; default: the experiment schema). Sweep files use it too."""
    try:
        return OmegaConf.merge(base, other)
    except ConfigKeyError as e:
        key = e.full_key or "?"
        valid = ", ".join(_valid_keys(ExperimentConfig() if schema is None else schema, key))
        raise ConfigError(f"{source}: unknown key '{key}'; valid keys here: {valid}") from None
    except ValidationError as e:
        raise ConfigError(f"{source}: key '{e.full_key}': {str(e).splitlines()[0]}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {str(e).splitlines()[0]}") from None


def read_yaml(path: str | Path, what: str = "experiment"):
    """A YAML file as an OmegaConf node, or one ConfigError line (missing file, syntax error)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        return OmegaConf.load(path)
    except Exception as e:  # YAML syntax errors come from several libraries
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None


def apply_overrides(node, overrides: Sequence[str], schema: Any = None):
    """Dotted `key=value` overrides (values parsed as YAML, like Hydra's) merged one by one into an OmegaConf
    node: the one place a command line's words enter a config (`schema`: see merge; sweep files use it too)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value, e.g. training.gamma=0.1")
        node = merge(node, OmegaConf.from_dotlist([item]), f"override '{item}'", schema)
    return node


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Defaults <- YAML file <- dotted `key=value` overrides, validated, as frozen dataclasses."""
    cfg = OmegaConf.structured(ExperimentConfig)
    name = ""
    if path is not None:
        cfg = merge(cfg, read_yaml(path), str(path))
        name = Path(path).stem
    cfg = apply_overrides(cfg, overrides)
    if not cfg.run.name and name:
        cfg = merge(cfg, {"run": {"name": name}}, "run name")
    return _finish(cfg)


def replace(cfg: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """A copy of `cfg` with dotted overrides applied and validated."""
    return _finish(apply_overrides(OmegaConf.structured(cfg), overrides))


def set_values(cfg: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
    """A copy of `cfg` with dotted keys set to already-typed values (no YAML parsing: a run named
    '55863_00000' stays a string), validated."""
    merged = OmegaConf.structured(cfg)
    for key, value in values.items():
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        merged = merge(merged, OmegaConf.create(nested), f"key '{key}'")
    return _finish(merged)


def from_dict(data: dict) -> ExperimentConfig:
    """Rebuild a validated config from `to_dict` output (checkpoints, Ray worker configs)."""
    return _finish(merge(OmegaConf.structured(ExperimentConfig), data, "config"))


def to_dict(cfg: ExperimentConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def to_yaml(cfg: ExperimentConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def _finish(merged) -> ExperimentConfig:
    """Fill derived values, then freeze and validate. min_scale 0 means patch / image resolution (EpiGRAF:
    the smallest patch samples the image at its full resolution); ema_kimg 0 means batch x 0.3125 (the seed).
    Fine-tuning (training.resume with resume_only_G) sets what the reference's train.py:283-286 sets: ADA reacting
    in 100 kimg, no EMA ramp-up, no blur."""
    p, t = merged.training.patch, merged.training
    if p.min_scale == 0:
        merged = OmegaConf.merge(merged, {"training": {"patch": {"min_scale": p.resolution / merged.dataset.resolution}}})
    if t.ema_kimg == 0:
        merged = OmegaConf.merge(merged, {"training": {"ema_kimg": t.batch * 0.3125}})
    if t.resume and t.resume_only_G:
        merged = OmegaConf.merge(merged, {"training": {"augment": {"speed_kimg": 100.0}, "ema_rampup": 0.0,
                                                       "blur_sigma": 0.0}})
    out = OmegaConf.to_object(merged)
    validate(out)
    return out


# ---------------------------------------------------------------------------------------------- validation

def _refuse(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"key '{key}' = {value!r} is not allowed: expected {allowed}")


def _check_fields(node: Any, prefix: str) -> None:
    """Every field's own rule (declared beside it), depth first in declaration order."""
    for f in fields(node):
        value, key = getattr(node, f.name), prefix + f.name
        if is_dataclass(value):
            _check_fields(value, key + ".")
            continue
        r = f.metadata.get("rule")
        for v in (value if r and r.each else [value] if r else []):
            if not r.ok(v):
                raise _refuse(key, list(v) if isinstance(v, list) else v, r.allowed)


def validate(cfg: ExperimentConfig) -> None:
    """Raise ConfigError for the first impossible value, naming key, value and what is allowed: each field's rule,
    then the checks across fields."""
    _check_fields(cfg, "")
    d, p, cam = cfg.dataset, cfg.training.patch, cfg.dataset.camera
    if not 0 <= cam.ray_start < cam.ray_end:
        raise _refuse("dataset.camera.ray_end", cam.ray_end, f"> dataset.camera.ray_start ({cam.ray_start}) >= 0")
    if p.resolution > d.resolution:
        raise _refuse("training.patch.resolution", p.resolution, f"<= dataset.resolution ({d.resolution})")
    derived = p.resolution / d.resolution
    if not derived - 1e-9 <= p.min_scale <= 1:
        raise _refuse("training.patch.min_scale", p.min_scale,
                      f"in [training.patch.resolution / dataset.resolution ({derived:g}), 1], or 0 to derive it")
    if not p.min_scale <= p.max_scale <= 1:
        raise _refuse("training.patch.max_scale", p.max_scale, f"in [training.patch.min_scale ({p.min_scale}), 1]")
    if p.distribution == "discrete_uniform" and p.max_scale not in p.discrete_support:
        raise _refuse("training.patch.discrete_support", list(p.discrete_support),
                      f"a list holding training.patch.max_scale ({p.max_scale}): the only scale allowed at kimg 0")


def check_batch(cfg: ExperimentConfig, workers: int, workers_key: str = "run.workers") -> None:
    """The batch split over `workers` (known when a run or a sweep's trial is placed): whole micro-batches."""
    t = cfg.training
    if t.batch % workers:
        raise _refuse("training.batch", t.batch, f"a multiple of the number of workers ({workers_key} = {workers})")
    per_worker = t.batch // workers
    if t.batch_gpu and (per_worker % t.batch_gpu or t.batch_gpu > per_worker):
        raise _refuse("training.batch_gpu", t.batch_gpu,
                      f"a divisor of the per-worker batch {per_worker} (training.batch / workers)")
