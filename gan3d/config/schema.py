"""The experiment schema: one frozen dataclass per concept, each field's constraint declared beside it
(`rule`, `positive`, `at_least`, `one_of`, ...; checked by gan3d.config.load.validate, which adds the few checks
that span fields)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, List, Sequence

CAMERA_DISTS = ("dataset", "spherical_uniform", "uniform", "normal", "truncated_gaussian", "hybrid")
PATCH_DISTS = ("beta", "uniform", "discrete_uniform")
PRECISIONS = ("auto", "reference", "fp32", "tf32", "bf16")
CPU_MALLOCS = ("auto", "cached", "system")
AUGMENT_KINDS = ("ada", "fixed", "none")
METRICS = ("fid2k_full", "fid50k_full", "kid2k_full", "kid50k_full", "swd")
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss")  # object stores pyarrow opens (gan3d.storage)
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass(frozen=True)
class Rule:
    """What a field allows: `ok(value)`, said as `allowed` in the error (of each element, for a list with `each`)."""
    ok: Callable[[Any], bool]
    allowed: str
    each: bool = False


def rule(default: Any, ok: Callable[[Any], bool], allowed: str, each: bool = False) -> Any:
    """A dataclass field with its constraint beside it (a list default is copied per instance)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"rule": Rule(ok, allowed, each)})
    return field(default=default, metadata={"rule": Rule(ok, allowed, each)})


def positive(default: Any, allowed: str = "> 0") -> Any:
    return rule(default, lambda v: v > 0, allowed)


def at_least(low: float, default: Any, allowed: str = "") -> Any:
    return rule(default, lambda v: v >= low, allowed or f">= {low:g}")


def one_of(choices: Sequence[str], default: str, allowed: str = "") -> Any:
    return rule(default, lambda v: v in choices, allowed or f"one of {', '.join(choices)}")


def probability(default: float) -> Any:
    return rule(default, lambda v: 0 <= v <= 1, "a probability in [0, 1]")


def power_of_two(default: int) -> Any:
    return rule(default, lambda n: n >= 4 and (n & (n - 1)) == 0, "a power of two >= 4")


def uri_scheme(path) -> str:
    """'s3' for s3://bucket/x, 'file' for file:///x, '' for a plain local path (the one test of "is this a URI")."""
    s = str(path)
    return s.split("://", 1)[0] if "://" in s else ""


@dataclass(frozen=True)
class CameraConfig:
    """Camera model and the distribution fake cameras are drawn from (REFERENCE.md table)."""
    fov: float = rule(12.0, lambda v: 0 < v < 180, "degrees in (0, 180)")  # full image
    radius: float = positive(1.0)  # camera distance from the origin
    ray_start: float = 0.88  # 0 <= ray_start < ray_end: the cross-field check
    ray_end: float = 1.12
    use_roll: bool = False  # render with the poses' roll (the seed ignores roll; gan3d's extra)
    # How G's cameras are drawn: 'dataset' (real poses) | spherical_uniform | uniform | normal | truncated_gaussian | hybrid
    dist: str = one_of(CAMERA_DISTS, "normal")
    yaw_mean: float = math.pi / 2  # yaw = pi/2 looks at the object's front (camera on +z)
    yaw_std: float = at_least(0, 0.3)  # std for gaussians, half-width for uniform ones
    pitch_mean: float = math.pi / 2
    pitch_std: float = at_least(0, 0.15)


@dataclass(frozen=True)
class DatasetConfig:
    path: str = ""  # zip / folder / Parquet dir / URI; '' = a synthetic set made under the run dir
    resolution: int = power_of_two(512)
    mirror: bool = False  # x-flip augmentation of reals (mirrors the yaw too)
    use_labels: bool = False
    c_dim: int = at_least(0, 0)  # number of classes when use_labels (0: the dataset's own count, read when the run starts)
    max_size: int = 0  # 0 = all images
    synthetic_kind: str = "primitives"  # scene family of the synthetic default
    synthetic_size: int = positive(512)  # images in the synthetic default
    camera: CameraConfig = field(default_factory=CameraConfig)


@dataclass(frozen=True)
class RenderConfig:
    num_coarse: int = at_least(2, 48)  # stratified samples per ray
    num_fine: int = at_least(0, 48)  # importance samples per ray, from the coarse weights
    cube_scale: float = positive(0.2)  # points are divided by this before the tri-plane lookup
    density_noise_std: float = at_least(0, 1.0)  # N(0, std) added to raw density while training...
    density_noise_kimg: float = 5000.0  # ...decaying linearly to 0 over this many kimg
    # white behind what a ray did not absorb; without a background model (model.generator.bg) or open_back every ray
    # ends opaque (the last interval is 1e10, as in the reference), so this then changes nothing (the header says so)
    white_back: bool = False
    # gan3d's extra, for rendered objects: the last interval is 1e-3 (as with a background model), not 1e10, so a ray
    # that meets nothing stays transparent and white_back's white (or the background model) shows behind it
    open_back: bool = False
    max_batch_res: int = at_least(1, 64)  # rays rendered per chunk = max_batch_res**2 (full-image rendering)


@dataclass(frozen=True)
class BackgroundConfig:
    enabled: bool = False
    num_layers: int = 4
    hidden_dim: int = 128
    num_samples: int = at_least(1, 8)  # samples per ray on the background sphere(s)


@dataclass(frozen=True)
class GeneratorConfig:
    z_dim: int = positive(512)
    w_dim: int = positive(512)
    mapping_layers: int = positive(2)
    triplane_resolution: int = power_of_two(512)
    triplane_channels: int = positive(32)  # per plane; the synthesis network outputs 3x this
    channel_base: int = positive(32768)
    channel_max: int = positive(512)
    mlp_layers: int = positive(2)
    mlp_hidden: int = positive(64)
    camera_cond: bool = False  # "GPC": condition the mapping network on the camera
    camera_cond_swap_prob: float = probability(0.5)  # GPC: final probability of conditioning on another fake's camera (1 -> it over 1000 kimg)
    render: RenderConfig = field(default_factory=RenderConfig)
    bg: BackgroundConfig = field(default_factory=BackgroundConfig)


@dataclass(frozen=True)
class DiscriminatorConfig:
    channel_base: int = positive(16384)  # 32768 x channel multiplier 0.5
    channel_max: int = positive(512)
    mbstd_group: int = positive(4)
    mbstd_channels: int = 1
    camera_cond: bool = False  # condition the projection head on yaw/pitch too
    hyper_mod: bool = True  # scale each block's conv1 input channels by 1 + tanh(affine(patch code))
    hyper_mod_dim: int = positive(512)  # width of the hyper-modulation code (the seed's fixed 512)
    cmap_dim: int = at_least(0, 0, ">= 0 (0 = D's channels at 4x4)")  # projection-head dimension; 0 = as the seed


@dataclass(frozen=True)
class ModelConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)


@dataclass(frozen=True)
class PatchConfig:
    distribution: str = one_of(PATCH_DISTS, "beta")
    resolution: int = power_of_two(64)  # and <= dataset.resolution: the cross-field check
    min_scale: float = 0.0  # 0 = patch resolution / image resolution (the seed's value); never below that
    max_scale: float = 1.0
    alpha: float = positive(1.0)
    beta_start: float = positive(0.001)
    beta_end: float = positive(0.8)
    anneal_kimg: float = at_least(0, 10000.0)
    # 'discrete_uniform' picks from the support inside [min_scale(t), max_scale] (the reference's default support)
    discrete_support: List[float] = rule([0.25, 1.0], lambda v: len(v) > 0 and all(0 < s <= 1 for s in v),
                                         "a non-empty list of scales in (0, 1]")


@dataclass(frozen=True)
class AugmentConfig:
    kind: str = one_of(AUGMENT_KINDS, "ada")
    p: float = probability(0.0)  # initial (ada) or constant (fixed) probability
    target: float = 0.6  # ADA target of E[sign(D(real))]
    speed_kimg: float = 500.0  # kimg for p to go 0 -> 1
    interval: int = 4  # steps between p updates


@dataclass(frozen=True)
class TrainingConfig:
    batch: int = positive(64)  # and a multiple of the workers: check_batch
    batch_gpu: int = at_least(0, 0, ">= 0 (0 = no accumulation)")  # per-worker micro-batch; 0 = batch / workers
    kimg: float = positive(25000.0)
    seed: int = 0
    gamma: float = at_least(0, 0.05)
    r1_interval: int = at_least(1, 16)
    lr_g: float = positive(0.0025)
    lr_d: float = positive(0.002)
    betas: List[float] = rule([0.0, 0.99], lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)")
    # EMA half-life of G; 0 = batch x 0.3125 kimg (the seed's ema_multiplier: 20 at batch 64)
    ema_kimg: float = positive(0.0, "> 0 kimg (0 in a file or override = batch x 0.3125)")
    ema_rampup: float = 0.05
    blur_sigma: float = at_least(0, 10.0)
    blur_fade_kimg: float = 200.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
    tick_kimg: float = positive(4.0, "> 0 kimg")
    snap_kimg: float = positive(200.0, "> 0 kimg")  # checkpoint interval
    metric_kimg: float = positive(200.0, "> 0 kimg")  # metric interval
    image_kimg: float = positive(200.0, "> 0 kimg")  # sample grid / video interval
    resume: str = ""  # checkpoint dir to start from
    resume_only_G: bool = False
    stop_on_divergence: bool = False
    # numerics of training: auto (reference on a GPU, fp32 elsewhere) | reference (TF32 off, D's top 4 blocks fp16,
    # as the reference) | fp32 | tf32 | bf16 (autocast of G's synthesis and D's blocks); docs/FIDELITY.md, PERF.md
    precision: str = one_of(PRECISIONS, "auto")
    compile: bool = False  # torch.compile (inductor) of the trained G's synthesis: ~1.2x on CPU after ~30-60 s (docs/PERF.md)
    triplane_kernel: bool = False  # gan3d's C++ CPU kernel for the trained G's tri-plane lookup (built once, docs/PERF.md)
    # CPU training: cached (glibc keeps freed blocks) | system | auto = cached where glibc is
    cpu_malloc: str = one_of(CPU_MALLOCS, "auto")


@dataclass(frozen=True)
class MetricsConfig:
    metrics: List[str] = rule(["fid2k_full", "kid2k_full", "swd"], lambda m: m in METRICS,
                              f"names from {', '.join(METRICS)}", each=True)
    num_fakes: int = positive(2048)
    inception_weights: str = ""  # path; '' = $GAN3D_INCEPTION_WEIGHTS or the cache path
    detector_sha256: str = ""  # pin of a TorchScript detector (NVIDIA's inception-2015-12-05.pt), required to run one


@dataclass(frozen=True)
class LoggingConfig:
    wandb: bool = True
    # '' = online if the user configured W&B, else offline
    wandb_mode: str = one_of(("", "online", "offline", "disabled"), "", "'', online, offline or disabled")
    project: str = "gan3d"
    entity: str = ""
    group: str = ""
    tags: List[str] = field(default_factory=list)
    grid_size: int = 16  # fixed-seed sample grid
    video_frames: int = 16


@dataclass(frozen=True)
class WorkerResources:
    """What one training run asks of the cluster (a run's `run.*` keys, a sweep trial's `resources.*`)."""
    workers: int = at_least(1, 1)
    gpus_per_worker: float = at_least(0, 0.0)
    cpus_per_worker: float = 1.0


@dataclass(frozen=True)
class RunSettings(WorkerResources):
    name: str = ""  # '' = the experiment file's stem
    out: str = "runs"
    # "" = out; a shared path or a URI (s3://, gs://) every node can reach
    storage_path: str = rule("", lambda v: uri_scheme(v) in ("", "file", *STORAGE_SCHEMES),
                             "a local or shared path, file://, or an object-store URI (s3://, gs://, hdfs://, abfs://)")
    max_failures: int = at_least(0, 3)
    num_to_keep: int = at_least(1, 2)
    placement_strategy: str = one_of(PLACEMENTS, "PACK", "PACK, SPREAD, STRICT_PACK or STRICT_SPREAD")  # Ray placement groups
    connect_timeout_s: float = positive(30.0, "> 0 seconds")  # how long to wait for a cluster named by --address


@dataclass(frozen=True)
class ExperimentConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    run: RunSettings = field(default_factory=RunSettings)
