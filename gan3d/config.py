"""The typed experiment schema: one frozen dataclass per concept, merged with OmegaConf.

An experiment is `ExperimentConfig` defaults <- a YAML preset <- `key=value` overrides (dotted paths,
like the seed's Hydra overrides). Unknown keys, wrong types and impossible values raise `ConfigError`
naming the key, the value and what is allowed. Everything downstream receives the frozen dataclass
instances, never dicts read with `.get()`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, List, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from gan3d.errors import ConfigError


@dataclass(frozen=True)
class CameraConfig:
    """Camera model and the distribution fake cameras are drawn from (REFERENCE.md table)."""
    fov: float = 12.0  # degrees, full image
    radius: float = 1.0  # camera distance from the origin
    ray_start: float = 0.88
    ray_end: float = 1.12
    use_roll: bool = False  # render with the poses' roll (the seed ignores roll; gan3d's extra)
    # How G's cameras are drawn: 'dataset' (real poses) | spherical_uniform | uniform | normal | truncated_gaussian | hybrid
    dist: str = "normal"
    yaw_mean: float = math.pi / 2  # yaw = pi/2 looks at the object's front (camera on +z)
    yaw_std: float = 0.3  # std for gaussians, half-width for uniform ones
    pitch_mean: float = math.pi / 2
    pitch_std: float = 0.15


@dataclass(frozen=True)
class DatasetConfig:
    path: str = ""  # zip / folder / Parquet dir / URI; '' = a synthetic set made under the run dir
    resolution: int = 512
    mirror: bool = False  # x-flip augmentation of reals (mirrors the yaw too)
    use_labels: bool = False
    c_dim: int = 0  # number of classes when use_labels (0: the dataset's own count, read when the run starts)
    max_size: int = 0  # 0 = all images
    synthetic_kind: str = "primitives"  # scene family of the synthetic default
    synthetic_size: int = 512  # images in the synthetic default
    camera: CameraConfig = field(default_factory=CameraConfig)


@dataclass(frozen=True)
class RenderConfig:
    num_coarse: int = 48  # stratified samples per ray
    num_fine: int = 48  # importance samples per ray, from the coarse weights
    cube_scale: float = 0.2  # points are divided by this before the tri-plane lookup
    density_noise_std: float = 1.0  # N(0, std) added to raw density while training...
    density_noise_kimg: float = 5000.0  # ...decaying linearly to 0 over this many kimg
    # white behind what a ray did not absorb; without a background model (model.generator.bg) every ray ends opaque
    # (the last interval is 1e10, as in the reference), so this then changes nothing (the run's header says so)
    white_back: bool = False
    max_batch_res: int = 64  # rays rendered per chunk = max_batch_res**2 (full-image rendering)


@dataclass(frozen=True)
class BackgroundConfig:
    enabled: bool = False
    num_layers: int = 4
    hidden_dim: int = 128
    num_samples: int = 8  # samples per ray on the background sphere(s)


@dataclass(frozen=True)
class GeneratorConfig:
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 2
    triplane_resolution: int = 512
    triplane_channels: int = 32  # per plane; the synthesis network outputs 3x this
    channel_base: int = 32768
    channel_max: int = 512
    mlp_layers: int = 2
    mlp_hidden: int = 64
    camera_cond: bool = False  # "GPC": condition the mapping network on the camera
    camera_cond_swap_prob: float = 0.5  # GPC: final probability of conditioning on another fake's camera (1 -> it over 1000 kimg)
    render: RenderConfig = field(default_factory=RenderConfig)
    bg: BackgroundConfig = field(default_factory=BackgroundConfig)


@dataclass(frozen=True)
class DiscriminatorConfig:
    channel_base: int = 16384  # 32768 x channel multiplier 0.5
    channel_max: int = 512
    mbstd_group: int = 4
    mbstd_channels: int = 1
    camera_cond: bool = False  # condition the projection head on yaw/pitch too
    hyper_mod: bool = True  # scale each block's conv1 input channels by 1 + tanh(affine(patch code))
    hyper_mod_dim: int = 512  # width of the hyper-modulation code (the seed's fixed 512)
    cmap_dim: int = 0  # projection-head dimension; 0 = D's channels at 4x4, as the seed


@dataclass(frozen=True)
class ModelConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)


@dataclass(frozen=True)
class PatchConfig:
    distribution: str = "beta"  # beta | uniform | discrete_uniform
    resolution: int = 64
    min_scale: float = 0.0  # 0 = patch resolution / image resolution (the seed's value); never below that
    max_scale: float = 1.0
    alpha: float = 1.0
    beta_start: float = 0.001
    beta_end: float = 0.8
    anneal_kimg: float = 10000.0
    # 'discrete_uniform' picks from the support inside [min_scale(t), max_scale] (the reference's default support)
    discrete_support: List[float] = field(default_factory=lambda: [0.25, 1.0])


@dataclass(frozen=True)
class AugmentConfig:
    kind: str = "ada"  # ada | fixed | none
    p: float = 0.0  # initial (ada) or constant (fixed) probability
    target: float = 0.6  # ADA target of E[sign(D(real))]
    speed_kimg: float = 500.0  # kimg for p to go 0 -> 1
    interval: int = 4  # steps between p updates


@dataclass(frozen=True)
class TrainingConfig:
    batch: int = 64
    batch_gpu: int = 0  # per-worker micro-batch; 0 = batch / workers (no accumulation)
    kimg: float = 25000.0
    seed: int = 0
    gamma: float = 0.05
    r1_interval: int = 16
    lr_g: float = 0.0025
    lr_d: float = 0.002
    betas: List[float] = field(default_factory=lambda: [0.0, 0.99])
    ema_kimg: float = 0.0  # EMA half-life of G; 0 = batch x 0.3125 kimg (the seed's ema_multiplier: 20 at batch 64)
    ema_rampup: float = 0.05
    blur_sigma: float = 10.0
    blur_fade_kimg: float = 200.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
    tick_kimg: float = 4.0
    snap_kimg: float = 200.0  # checkpoint interval
    metric_kimg: float = 200.0  # metric interval
    image_kimg: float = 200.0  # sample grid / video interval
    resume: str = ""  # checkpoint dir to start from
    resume_only_G: bool = False
    stop_on_divergence: bool = False
    # numerics of training: auto (reference on a GPU, fp32 elsewhere) | reference (TF32 off, D's top 4 blocks fp16,
    # as the reference) | fp32 | tf32 | bf16 (autocast of G's synthesis and D's blocks); docs/FIDELITY.md, PERF.md
    precision: str = "auto"
    compile: bool = False  # torch.compile (inductor) of the trained G's synthesis: ~1.2x on CPU after ~30-60 s (docs/PERF.md)
    triplane_kernel: bool = False  # gan3d's C++ CPU kernel for the trained G's tri-plane lookup (built once, docs/PERF.md)
    cpu_malloc: str = "auto"  # CPU training: cached (glibc keeps freed blocks) | system | auto = cached where glibc is


@dataclass(frozen=True)
class MetricsConfig:
    metrics: List[str] = field(default_factory=lambda: ["fid2k_full", "kid2k_full", "swd"])
    num_fakes: int = 2048
    inception_weights: str = ""  # path; '' = $GAN3D_INCEPTION_WEIGHTS or the cache path
    detector_sha256: str = ""  # pin of a TorchScript detector (NVIDIA's inception-2015-12-05.pt), required to run one


@dataclass(frozen=True)
class LoggingConfig:
    wandb: bool = True
    wandb_mode: str = ""  # '' = online if the user configured W&B, else offline
    project: str = "gan3d"
    entity: str = ""
    group: str = ""
    tags: List[str] = field(default_factory=list)
    grid_size: int = 16  # fixed-seed sample grid
    video_frames: int = 16


@dataclass(frozen=True)
class WorkerResources:
    """What one training run asks of the cluster (a run's `run.*` keys, a sweep trial's `resources.*`)."""
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0


@dataclass(frozen=True)
class RunSettings(WorkerResources):
    name: str = ""  # '' = the experiment file's stem
    out: str = "runs"
    storage_path: str = ""  # "" = out; a shared path or a URI (s3://, gs://) every node can reach
    max_failures: int = 3
    num_to_keep: int = 2
    placement_strategy: str = "PACK"  # PACK | SPREAD | STRICT_PACK | STRICT_SPREAD (Ray placement groups)
    connect_timeout_s: float = 30.0  # how long to wait for a cluster named by --address before saying so


@dataclass(frozen=True)
class ExperimentConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    run: RunSettings = field(default_factory=RunSettings)


CAMERA_DISTS = ("dataset", "spherical_uniform", "uniform", "normal", "truncated_gaussian", "hybrid")
PATCH_DISTS = ("beta", "uniform", "discrete_uniform")
PRECISIONS = ("auto", "reference", "fp32", "tf32", "bf16")
CPU_MALLOCS = ("auto", "cached", "system")
AUGMENT_KINDS = ("ada", "fixed", "none")
METRICS = ("fid2k_full", "fid50k_full", "kid2k_full", "kid50k_full", "swd")
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss")  # object stores pyarrow opens (gan3d.storage)


def uri_scheme(path) -> str:
    """'s3' for s3://bucket/x, 'file' for file:///x, '' for a plain local path (the one test of "is this a URI")."""
    s = str(path)
    return s.split("://", 1)[0] if "://" in s else ""


# ---------------------------------------------------------------------------------------------- loading

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


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Defaults <- YAML file <- dotted `key=value` overrides, validated, as frozen dataclasses."""
    cfg = OmegaConf.structured(ExperimentConfig)
    name = ""
    if path is not None:
        cfg = merge(cfg, read_yaml(path), str(path))
        name = Path(path).stem
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value, e.g. training.gamma=0.1")
        cfg = merge(cfg, OmegaConf.from_dotlist([item]), f"override '{item}'")
    if not cfg.run.name and name:
        cfg = merge(cfg, {"run": {"name": name}}, "run name")
    out = _finish(cfg)
    return out


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


def from_dict(data: dict) -> ExperimentConfig:
    """Rebuild a validated config from `to_dict` output (checkpoints, Ray worker configs)."""
    out = _finish(merge(OmegaConf.structured(ExperimentConfig), data, "config"))
    return out


def to_dict(cfg: ExperimentConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def to_yaml(cfg: ExperimentConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def set_values(cfg: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
    """A copy of `cfg` with dotted keys set to already-typed values (no YAML parsing: a run named
    '55863_00000' stays a string), validated."""
    merged = OmegaConf.structured(cfg)
    for key, value in values.items():
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        merged = merge(merged, OmegaConf.create(nested), f"key '{key}'")
    out = _finish(merged)
    return out


def replace(cfg: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """A copy of `cfg` with dotted overrides applied and validated."""
    merged = OmegaConf.structured(cfg)
    for item in overrides:
        merged = merge(merged, OmegaConf.from_dotlist([item]), f"override '{item}'")
    out = _finish(merged)
    return out


# ---------------------------------------------------------------------------------------------- validation

def _is_pow2(n: int) -> bool:
    return n >= 4 and (n & (n - 1)) == 0


def validate(cfg: ExperimentConfig) -> None:
    """Raise ConfigError for the first impossible value, naming key, value and what is allowed."""
    def need(ok: bool, key: str, value: Any, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"key '{key}' = {value!r} is not allowed: expected {allowed}")

    d, g, dc, t, p = cfg.dataset, cfg.model.generator, cfg.model.discriminator, cfg.training, cfg.training.patch
    cam = d.camera
    need(_is_pow2(d.resolution), "dataset.resolution", d.resolution, "a power of two >= 4")
    need(d.c_dim >= 0, "dataset.c_dim", d.c_dim, ">= 0")
    need(d.synthetic_size > 0, "dataset.synthetic_size", d.synthetic_size, "> 0")
    need(cam.dist in CAMERA_DISTS, "dataset.camera.dist", cam.dist, f"one of {', '.join(CAMERA_DISTS)}")
    need(0 < cam.fov < 180, "dataset.camera.fov", cam.fov, "degrees in (0, 180)")
    need(cam.radius > 0, "dataset.camera.radius", cam.radius, "> 0")
    need(0 <= cam.ray_start < cam.ray_end, "dataset.camera.ray_end", cam.ray_end,
         f"> dataset.camera.ray_start ({cam.ray_start}) >= 0")
    need(cam.yaw_std >= 0, "dataset.camera.yaw_std", cam.yaw_std, ">= 0")
    need(cam.pitch_std >= 0, "dataset.camera.pitch_std", cam.pitch_std, ">= 0")

    need(_is_pow2(g.triplane_resolution), "model.generator.triplane_resolution", g.triplane_resolution,
         "a power of two >= 4")
    for key in ("z_dim", "w_dim", "mapping_layers", "triplane_channels", "channel_base", "channel_max",
                "mlp_layers", "mlp_hidden"):
        need(getattr(g, key) > 0, f"model.generator.{key}", getattr(g, key), "> 0")
    need(0 <= g.camera_cond_swap_prob <= 1, "model.generator.camera_cond_swap_prob", g.camera_cond_swap_prob,
         "a probability in [0, 1]")
    r = g.render
    need(r.num_coarse >= 2, "model.generator.render.num_coarse", r.num_coarse, ">= 2")
    need(r.num_fine >= 0, "model.generator.render.num_fine", r.num_fine, ">= 0")
    need(r.cube_scale > 0, "model.generator.render.cube_scale", r.cube_scale, "> 0")
    need(r.density_noise_std >= 0, "model.generator.render.density_noise_std", r.density_noise_std, ">= 0")
    need(r.max_batch_res >= 1, "model.generator.render.max_batch_res", r.max_batch_res, ">= 1")
    need(g.bg.num_samples >= 1, "model.generator.bg.num_samples", g.bg.num_samples, ">= 1")

    for key in ("channel_base", "channel_max", "mbstd_group", "hyper_mod_dim"):
        need(getattr(dc, key) > 0, f"model.discriminator.{key}", getattr(dc, key), "> 0")
    need(dc.cmap_dim >= 0, "model.discriminator.cmap_dim", dc.cmap_dim, ">= 0 (0 = D's channels at 4x4)")

    need(_is_pow2(p.resolution), "training.patch.resolution", p.resolution, "a power of two >= 4")
    need(p.resolution <= d.resolution, "training.patch.resolution", p.resolution,
         f"<= dataset.resolution ({d.resolution})")
    need(p.distribution in PATCH_DISTS, "training.patch.distribution", p.distribution,
         f"one of {', '.join(PATCH_DISTS)}")
    derived = p.resolution / d.resolution
    need(derived - 1e-9 <= p.min_scale <= 1, "training.patch.min_scale", p.min_scale,
         f"in [training.patch.resolution / dataset.resolution ({derived:g}), 1], or 0 to derive it")
    need(p.min_scale <= p.max_scale <= 1, "training.patch.max_scale", p.max_scale,
         f"in [training.patch.min_scale ({p.min_scale}), 1]")
    need(p.alpha > 0, "training.patch.alpha", p.alpha, "> 0")
    need(p.beta_start > 0, "training.patch.beta_start", p.beta_start, "> 0")
    need(p.beta_end > 0, "training.patch.beta_end", p.beta_end, "> 0")
    need(p.anneal_kimg >= 0, "training.patch.anneal_kimg", p.anneal_kimg, ">= 0")
    need(len(p.discrete_support) > 0 and all(0 < s <= 1 for s in p.discrete_support),
         "training.patch.discrete_support", list(p.discrete_support), "a non-empty list of scales in (0, 1]")
    need(p.distribution != "discrete_uniform" or p.max_scale in p.discrete_support,
         "training.patch.discrete_support", list(p.discrete_support),
         f"a list holding training.patch.max_scale ({p.max_scale}): the only scale allowed at kimg 0")

    need(t.batch > 0, "training.batch", t.batch, "> 0")
    need(t.precision in PRECISIONS, "training.precision", t.precision, f"one of {', '.join(PRECISIONS)}")
    need(t.cpu_malloc in CPU_MALLOCS, "training.cpu_malloc", t.cpu_malloc, f"one of {', '.join(CPU_MALLOCS)}")
    need(t.batch_gpu >= 0, "training.batch_gpu", t.batch_gpu, ">= 0 (0 = no accumulation)")
    need(t.kimg > 0, "training.kimg", t.kimg, "> 0")
    need(t.gamma >= 0, "training.gamma", t.gamma, ">= 0")
    need(t.r1_interval >= 1, "training.r1_interval", t.r1_interval, ">= 1")
    need(t.lr_g > 0, "training.lr_g", t.lr_g, "> 0")
    need(t.lr_d > 0, "training.lr_d", t.lr_d, "> 0")
    need(len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "training.betas", list(t.betas),
         "two numbers in [0, 1)")
    need(t.ema_kimg > 0, "training.ema_kimg", t.ema_kimg, "> 0 kimg (0 in a file or override = batch x 0.3125)")
    need(t.blur_sigma >= 0, "training.blur_sigma", t.blur_sigma, ">= 0")
    need(t.augment.kind in AUGMENT_KINDS, "training.augment.kind", t.augment.kind, f"one of {', '.join(AUGMENT_KINDS)}")
    need(0 <= t.augment.p <= 1, "training.augment.p", t.augment.p, "a probability in [0, 1]")
    for key in ("tick_kimg", "snap_kimg", "metric_kimg", "image_kimg"):
        need(getattr(t, key) > 0, f"training.{key}", getattr(t, key), "> 0 kimg")

    for m in cfg.metrics.metrics:
        need(m in METRICS, "metrics.metrics", m, f"names from {', '.join(METRICS)}")
    need(cfg.metrics.num_fakes > 0, "metrics.num_fakes", cfg.metrics.num_fakes, "> 0")
    need(cfg.logging.wandb_mode in ("", "online", "offline", "disabled"), "logging.wandb_mode",
         cfg.logging.wandb_mode, "'', online, offline or disabled")
    need(cfg.run.workers >= 1, "run.workers", cfg.run.workers, ">= 1")
    need(cfg.run.gpus_per_worker >= 0, "run.gpus_per_worker", cfg.run.gpus_per_worker, ">= 0")
    need(cfg.run.max_failures >= 0, "run.max_failures", cfg.run.max_failures, ">= 0")
    need(cfg.run.num_to_keep >= 1, "run.num_to_keep", cfg.run.num_to_keep, ">= 1")
    need(cfg.run.connect_timeout_s > 0, "run.connect_timeout_s", cfg.run.connect_timeout_s, "> 0 seconds")
    need(cfg.run.placement_strategy in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"), "run.placement_strategy",
         cfg.run.placement_strategy, "PACK, SPREAD, STRICT_PACK or STRICT_SPREAD")
    sp = cfg.run.storage_path
    need(uri_scheme(sp) in ("", "file", *STORAGE_SCHEMES),
         "run.storage_path", sp, "a local or shared path, file://, or an object-store URI (s3://, gs://, hdfs://, abfs://)")
