"""The sweep file: a base experiment, fixed overrides, a search space over any config key, the metric,
a scheduler (fifo / asha / pbt / pb2, intervals in kimg), trial resources. Parsed into a frozen schema
and checked against the experiment schema before any trial starts."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import OmegaConf

from gan3d import config as config_mod
from gan3d.config import ExperimentConfig, WorkerResources
from gan3d.errors import ConfigError

SPACE_KINDS = ("grid", "choice", "uniform", "loguniform", "randint", "quniform")
SCHEDULERS = ("fifo", "asha", "pbt", "pb2")
SEARCHERS = ("random", "optuna")
# what every tick reports (besides the configured metrics): valid sweep metrics
TICK_METRICS = ("loss_G", "loss_D_real", "loss_D_fake", "r1_penalty", "logits_real", "logits_fake", "augment_p",
                "sec_per_kimg")


@dataclass(frozen=True)
class SchedulerSettings:
    kind: str = "fifo"
    grace_period_kimg: float = 0.0  # asha: 0 = one tick
    reduction_factor: float = 2.0
    perturbation_interval_kimg: float = 0.0  # pbt / pb2: 0 = the experiment's snap_kimg
    quantile_fraction: float = 0.25  # pbt: bottom fraction that exploits the top fraction
    resample_probability: float = 0.25
    mutations: Dict[str, Any] = field(default_factory=dict)  # key -> space spec (pbt) or [lo, hi] (pb2)


@dataclass(frozen=True)
class SweepSettings:
    name: str = ""  # '' = the sweep file's stem
    experiment: str = ""  # path, relative to the sweep file
    overrides: List[str] = field(default_factory=list)
    space: Dict[str, Any] = field(default_factory=dict)
    num_samples: int = 1
    metric: str = ""  # '' = fid2k_full with Inception weights, else swd
    mode: str = "min"
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    search: str = "random"
    seed: int = 0
    resources: WorkerResources = field(default_factory=WorkerResources)
    max_concurrent_trials: int = 0  # 0 = as many as the cluster fits
    out: str = "sweeps"


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep: settings plus the resolved base experiment."""
    settings: SweepSettings
    base: ExperimentConfig
    metric: str
    source: str


SWEEP_KEYS = tuple(f.name for f in fields(SweepSettings))


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> Sweep:
    """Sweep file <- overrides: keys of the sweep schema go to the sweep, others to the base experiment."""
    path = Path(path)
    settings = config_mod.merge(OmegaConf.structured(SweepSettings), config_mod.read_yaml(path, "sweep"), str(path),
                                SweepSettings())
    experiment_overrides = []
    for item in overrides:
        key = item.split("=", 1)[0]
        if key.split(".")[0] in SWEEP_KEYS and "=" in item:
            settings = config_mod.apply_overrides(settings, [item], schema=SweepSettings())
        else:
            experiment_overrides.append(item)
    s: SweepSettings = OmegaConf.to_object(settings)
    if not s.experiment:
        raise ConfigError(f"{path}: key 'experiment' is required (the base experiment YAML, relative to the sweep file)")
    exp = Path(s.experiment)
    exp = exp if exp.is_absolute() else (path.parent / exp).resolve()
    base = config_mod.load_config(exp, list(s.overrides) + experiment_overrides)
    if base.run.storage_path:  # silently ignoring it would put trials where the user does not look
        raise ConfigError(f"{path}: key 'run.storage_path' = {base.run.storage_path!r} is not used by sweeps: "
                          f"trials live under the sweep's 'out' (a shared path or an s3:// / gs:// URI); set 'out' instead")
    if not s.name:
        s = _replace(s, name=path.stem)
    metric = check(s, base)
    return Sweep(s, base, metric, str(path))


def _replace(s, **kw):
    from dataclasses import replace
    return replace(s, **kw)


def _spec(key: str, spec: Any, where: str) -> tuple[str, list]:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}: space['{key}'] = {spec!r}: expected one of {{{', '.join(SPACE_KINDS)}: ...}}")
    kind, args = next(iter(spec.items()))
    if kind not in SPACE_KINDS:
        raise ConfigError(f"{where}: space['{key}']: unknown kind '{kind}'; expected one of {', '.join(SPACE_KINDS)}")
    args = list(args) if isinstance(args, (list, tuple)) else [args]
    if kind in ("grid", "choice") and not args:
        raise ConfigError(f"{where}: space['{key}']: empty {kind}; give at least one value")
    need = {"uniform": 2, "loguniform": 2, "randint": 2, "quniform": 3}.get(kind)
    if need and len(args) != need:
        raise ConfigError(f"{where}: space['{key}']: {kind} takes {need} numbers, got {args}")
    if kind in ("uniform", "loguniform", "randint", "quniform") and not args[0] < args[1]:
        raise ConfigError(f"{where}: space['{key}']: {kind} bounds must satisfy low < high, got {args[:2]}")
    if kind == "loguniform" and args[0] <= 0:
        raise ConfigError(f"{where}: space['{key}']: loguniform bounds must be > 0, got {args[:2]}")
    return kind, args


def _examples(kind: str, args: list) -> list:
    """Values that must all be valid for the experiment schema."""
    if kind in ("grid", "choice"):
        return args
    if kind == "randint":
        return [int(args[0]), int(args[1]) - 1]
    return [args[0], args[1]]


def check(s: SweepSettings, base: ExperimentConfig) -> str:
    """Validate everything that can be checked before a trial starts; returns the metric to optimise."""
    where = f"sweep '{s.name}'"
    if s.scheduler.kind not in SCHEDULERS:
        raise ConfigError(f"{where}: scheduler.kind '{s.scheduler.kind}': expected one of {', '.join(SCHEDULERS)}")
    if s.search not in SEARCHERS:
        raise ConfigError(f"{where}: search '{s.search}': expected one of {', '.join(SEARCHERS)}")
    if s.mode not in ("min", "max"):
        raise ConfigError(f"{where}: mode '{s.mode}': expected min or max")
    if s.num_samples < 1:
        raise ConfigError(f"{where}: num_samples {s.num_samples}: expected >= 1")
    if not s.space and s.scheduler.kind not in ("pbt", "pb2"):
        raise ConfigError(f"{where}: space is empty; give at least one key to sweep")
    for key, spec in {**s.space, **s.scheduler.mutations}.items():
        if s.scheduler.kind == "pb2" and key in s.scheduler.mutations:
            spec = {"uniform": spec}
        kind, args = _spec(key, spec, where)
        for v in _examples(kind, args):
            try:
                config_mod.set_values(base, {key: v})
            except ConfigError as e:
                raise ConfigError(f"{where}: space key '{key}': {e}") from None
    from gan3d.metrics import ranking_metric
    metric = s.metric or ranking_metric(base) or "swd"
    reported = set(base.metrics.metrics) | set(TICK_METRICS) | {"kimg"}
    if any(m.startswith(("swd",)) for m in reported):
        reported |= {f"swd/{base.dataset.resolution >> i}" for i in range(8)}
    if metric not in reported:
        raise ConfigError(f"{where}: metric '{metric}' is never reported by these runs; they report "
                          f"{', '.join(sorted(reported))} (add it to metrics.metrics if it is a metric)")
    if metric.startswith(("fid", "kid")):
        from gan3d.metrics.inception import missing_message, weights_path
        if weights_path(base.metrics.inception_weights) is None:
            raise ConfigError(f"{where}: metric '{metric}': {missing_message().rsplit(';', 1)[0]}; "
                              f"provide the weights or sweep on metric: swd")
    try:
        config_mod.check_batch(base, s.resources.workers, "resources.workers")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return metric


def tune_domain(kind: str, args: list):
    from ray import tune
    return {"grid": lambda: tune.grid_search(args), "choice": lambda: tune.choice(args),
            "uniform": lambda: tune.uniform(*args), "loguniform": lambda: tune.loguniform(*args),
            "randint": lambda: tune.randint(int(args[0]), int(args[1])),
            "quniform": lambda: tune.quniform(*args)}[kind]()


def param_space(s: SweepSettings) -> dict:
    return {key: tune_domain(*_spec(key, spec, s.name)) for key, spec in s.space.items()}


def scheduler(s: SweepSettings, base: ExperimentConfig, metric: str):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    sc = s.scheduler
    if sc.kind == "fifo":
        return FIFOScheduler()
    if sc.kind == "asha":
        return ASHAScheduler(time_attr="kimg", max_t=base.training.kimg,
                             grace_period=sc.grace_period_kimg or base.training.tick_kimg,
                             reduction_factor=sc.reduction_factor)
    interval = sc.perturbation_interval_kimg or base.training.snap_kimg
    if sc.kind == "pbt":
        mutations = {k: tune_domain(*_spec(k, v, s.name)) for k, v in sc.mutations.items()}
        return PopulationBasedTraining(time_attr="kimg", perturbation_interval=interval,
                                       hyperparam_mutations=mutations, quantile_fraction=sc.quantile_fraction,
                                       resample_probability=sc.resample_probability, synch=False)
    try:
        from ray.tune.schedulers.pb2 import PB2
        import GPy  # noqa: F401  (PB2's Gaussian process)
    except ImportError:
        raise ConfigError(f"sweep '{s.name}': scheduler pb2 needs GPy and scikit-learn "
                          f"(pip install 'gan3d[pb2]')") from None
    return PB2(time_attr="kimg", perturbation_interval=interval,
               hyperparam_bounds={k: list(v) for k, v in sc.mutations.items()})


def search_alg(s: SweepSettings, metric: str) -> Optional[Any]:
    if s.search == "random":
        return None  # Tune's BasicVariantGenerator: grids expanded, distributions sampled
    try:
        from ray.tune.search.optuna import OptunaSearch
        import optuna  # noqa: F401
    except ImportError:
        raise ConfigError(f"sweep '{s.name}': search 'optuna' needs the optuna package (pip install optuna)") from None
    if any(next(iter(v)) == "grid" for v in s.space.values()):
        raise ConfigError(f"sweep '{s.name}': search 'optuna' cannot expand 'grid' entries; use 'choice'")
    return OptunaSearch(seed=s.seed)


def trials_that_fit(s: SweepSettings, cluster: dict) -> int:
    """How many trials the cluster runs at once; ConfigError when not even one fits."""
    r = s.resources
    need_cpu = r.workers * r.cpus_per_worker + 0.01
    need_gpu = r.workers * r.gpus_per_worker
    have_cpu, have_gpu = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    if need_cpu > have_cpu or need_gpu > have_gpu:
        raise ConfigError(f"sweep '{s.name}': a trial needs {need_cpu:g} CPUs and {need_gpu:g} GPUs "
                          f"(resources: {r.workers} workers x {r.cpus_per_worker:g} CPU, {r.gpus_per_worker:g} GPU) "
                          f"but the cluster has {have_cpu:g} CPUs and {have_gpu:g} GPUs")
    fit = math.floor(have_cpu / need_cpu)
    if need_gpu:
        fit = min(fit, math.floor(have_gpu / need_gpu))
    return max(1, fit)
