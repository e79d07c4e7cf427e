"""`gan3d bench`: throughput and memory of a config on this hardware.

Training mode times whole iterations exactly as the loop runs them (every phase whose interval divides
the step, so lazy R1 costs what it costs in training), after a warm-up, on random real batches (data
loading is measured separately by `gan3d dataset bench`). Generation mode times full-resolution G_ema
rendering with chunking, the cost of a 50k-image evaluation. Shares of time come from the profiler's
gan3d::generator / discriminator / backward / optimizer scopes.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import torch

from gan3d.config import ExperimentConfig
from gan3d.draws import RandomDraws
from gan3d.nn import build_generator, resolve_precision
from gan3d.training.allocator import use_cpu_malloc
from gan3d.training.build import build_networks
from gan3d.training.phases import Batch, GanParts, PosePool, Progress, training_step

SCOPES = ("gan3d::generator", "gan3d::discriminator", "gan3d::backward", "gan3d::optimizer")


@dataclass
class BenchResult:
    mode: str
    device: str
    threads: int
    iterations: int
    batch: int
    img_per_s: float  # total images / total time (lazy R1 included at its interval)
    img_per_s_median: float  # batch / median iteration time
    sec_per_kimg: float
    peak_memory_gb: float
    shares: dict = field(default_factory=dict)  # fraction of profiled time per scope
    paths: dict = field(default_factory=dict)  # which implementation each op took
    workers: int = 1
    scaling_efficiency: Optional[float] = None
    warmup_s: float = 0.0  # the untimed warm-up iterations (training.compile builds its graphs there)

    def lines(self) -> list[str]:
        out = [f"mode {self.mode} on {self.device} ({self.threads} threads), batch {self.batch}, "
               f"{self.iterations} iterations",
               f"throughput: {self.img_per_s:.3f} img/s ({self.sec_per_kimg:.1f} s/kimg); "
               f"median iteration {self.img_per_s_median:.3f} img/s",
               f"peak memory: {self.peak_memory_gb:.2f} GB; warm-up {self.warmup_s:.1f} s (not timed)"]
        if self.shares:
            out.append("time shares: " + ", ".join(f"{k.split('::')[1]} {v:.0%}" for k, v in self.shares.items()))
        out.append("op paths: " + ", ".join(f"{k}={v}" for k, v in self.paths.items()))
        if self.scaling_efficiency is not None:
            out.append(f"{self.workers} workers: scaling efficiency {self.scaling_efficiency:.0%} vs one worker")
        return out


def op_paths() -> dict:
    """The implementation every hot op takes."""
    from gan3d.nn import layers, lean, resample

    return {"modulated_conv": "batched conv (pytorch)" if layers.BATCHED_MODCONV else "reference grouped conv (pytorch)",
            "upfirdn2d": "strided depthwise conv (pytorch)" if resample.FAST_RESAMPLE else "reference upfirdn2d (pytorch)",
            "fir_filters": "depthwise conv with its own transposed gradient (pytorch)",
            "bias_act": "lean (keeps its output only)" if lean.ENABLED else "pytorch",
            "synthesis_layer": ("lean (one node keeping its input and output; eager only)" if lean.ENABLED
                                else "pytorch ops"),
            "triplane_sample": ("grid_sample, lean backward (keeps the positions only)" if lean.ENABLED
                                else "grid_sample (pytorch)"), "volume_integrate": "pytorch"}


FAST_PATHS = ("FAST_RESAMPLE", "BATCHED_MODCONV", "LEAN")  # each with a reference path: PyTorch's own ops


def _fast_path(name: str, on: Optional[bool] = None) -> bool:
    """Read (and with `on`, set) one fast path: a switch in gan3d.nn.layers or .resample, or gan3d.nn.lean's
    autograd functions."""
    from gan3d.nn import layers, lean, resample

    owner = resample if name == "FAST_RESAMPLE" else layers
    if on is not None:
        lean.use(on) if name == "LEAN" else setattr(owner, name, on)
    return lean.ENABLED if name == "LEAN" else getattr(owner, name)


def compare_fast_paths(cfg: ExperimentConfig, iters: int = 3, rounds: int = 2, device: str = "cpu") -> dict:
    """img/s with every fast path off ('reference'), with each one alone, and all on ('fast'), alternated
    round-robin in one process so drift of the machine hits every variant alike."""
    variants = {"reference": ()} | {f"only {p}": (p,) for p in FAST_PATHS} | {"fast": FAST_PATHS}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    saved = {p: _fast_path(p) for p in FAST_PATHS}
    try:
        for _ in range(rounds):
            for name, on in variants.items():
                for p in FAST_PATHS:
                    _fast_path(p, p in on)
                rates[name].append(bench_train(cfg, iters=iters, device=device, profile=False).img_per_s)
    finally:
        for p, v in saved.items():
            _fast_path(p, v)
    med = {name: statistics.median(r) for name, r in rates.items()}
    return {"img_per_s": med, "speedup_vs_reference": {k: v / med["reference"] for k, v in med.items()}, "runs": rates}


def _peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build_gan(cfg: ExperimentConfig, device: torch.device, batch: int):
    """What training builds (gan3d.training.build), without G_ema: the reference's timed step (side_by_side.sh)
    has no EMA update either; and `batch` random reals at the prior's mean pose, whose cameras and labels the
    fakes draw. What every benchmark times or measures."""
    if device.type == "cuda":  # as the training loop runs
        torch.backends.cudnn.benchmark = True
    else:
        use_cpu_malloc(cfg.training.cpu_malloc)
    t = cfg.training
    net = build_networks(cfg, device, min(batch, t.batch_gpu or batch), ema=False)
    res = cfg.dataset.resolution
    c_dim = cfg.dataset.c_dim if cfg.dataset.use_labels else 0
    gen = torch.Generator().manual_seed(1)
    reals = Batch((torch.rand(batch, 3, res, res, generator=gen) * 2 - 1).to(device),
                  torch.tensor([[cfg.dataset.camera.yaw_mean, cfg.dataset.camera.pitch_mean, 0.0]] * batch).to(device),
                  torch.nn.functional.one_hot(torch.arange(batch) % max(c_dim, 1), max(c_dim, 1))[:, :c_dim].float().to(device))
    pool = PosePool(reals.angles.cpu(), reals.labels.cpu())  # the fakes' cameras and labels: those of the reals
    parts = GanParts(cfg, net.G, net.D, net.augment, RandomDraws(np.random.default_rng(0)), pool)
    return parts, net.optimizers, net.phases, reals


def bench_train(cfg: ExperimentConfig, iters: int = 5, warmup: int = 1, device: str = "cpu", batch: Optional[int] = None,
                profile: bool = True) -> BenchResult:
    dev = torch.device(device)
    t = cfg.training
    batch = batch or t.batch
    batch_gpu = t.batch_gpu or batch
    parts, opts, phases, reals = build_gan(cfg, dev, batch)
    micro = [Batch(i, a, c) for i, a, c in zip(reals.images.split(batch_gpu), reals.angles.split(batch_gpu),
                                               reals.labels.split(batch_gpu))]
    nimg = int(t.patch.anneal_kimg / 2 * 1000)  # mid-training patch scales
    # lazy R1 runs on steps 0, interval, ...: time the steps in that proportion
    reg = max((p.interval for p in phases), default=1)

    def step(i: int) -> None:
        training_step(parts, phases, opts, micro, Progress(nimg, i + reg))  # never step 0 (no density noise there)
    t_warm = time.perf_counter()
    for i in range(warmup):
        step(i + 1)  # warm-up without R1
    t_warm = time.perf_counter() - t_warm
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for i in range(iters):
        t0 = time.perf_counter()
        step(i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    # amortised: one R1 step (i = 0) per `reg` steps, the others as measured without R1
    plain = times[1:] or times
    per_iter = (times[0] + statistics.median(plain) * (reg - 1)) / reg if reg > 1 else statistics.mean(times)
    shares = _profile_shares(step, dev) if profile else {}
    return BenchResult("train", str(dev), torch.get_num_threads(), iters, batch, batch / per_iter,
                       batch / statistics.median(times), per_iter / batch * 1000, _peak_gb(dev), shares,
                       _train_paths(cfg, dev), warmup_s=t_warm)


def _train_paths(cfg: ExperimentConfig, dev: torch.device) -> dict:
    """op_paths() as training.* switches set them for this run."""
    t = cfg.training
    paths = {**op_paths(), "precision": resolve_precision(t.precision, dev),
             "synthesis": "torch.compile (inductor)" if t.compile else "eager"}
    if t.triplane_kernel:
        paths["triplane_sample"] = "gan3d C++ kernel (training.triplane_kernel)"
    if dev.type == "cpu":  # build_gan applied it; applying it again changes nothing and returns what it does
        paths["cpu_malloc"] = use_cpu_malloc(t.cpu_malloc)
    return paths


@contextlib.contextmanager
def _no_fd2():
    """The profiler's C++ side writes 'USDT ... profiler_start' lines straight to file descriptor 2: drop them."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _profile_shares(step, dev: torch.device) -> dict:
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep the profiler's own log lines off the terminal
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with _no_fd2(), torch.profiler.profile(activities=acts) as prof:
        step(0)  # an R1 step: every scope appears
    # On CUDA a scope's cost is the kernel time launched inside it (device_time_total): its CPU time is only the
    # launch overhead of asynchronous kernels. The profiler lists a scope twice there (the CPU range and its
    # GPU annotation, which carries no CPU time), so take the largest entry per scope rather than the last.
    events = prof.key_averages()
    attr = "device_time_total" if dev.type == "cuda" else "cpu_time_total"
    totals: dict[str, float] = {}
    for e in events:
        if e.key in SCOPES:
            totals[e.key] = max(totals.get(e.key, 0.0), float(getattr(e, attr, 0.0)))
    if dev.type == "cuda":
        # Autograd launches backward kernels from its own device thread, outside the backward scope (seen on an
        # H100: the scope held 0.2% of kernel time). Backward = all kernel time the forward/optimizer scopes miss.
        kernels = sum(float(getattr(e, "self_device_time_total", 0.0)) for e in events)
        forward = sum(v for k, v in totals.items() if k != "gan3d::backward")
        totals["gan3d::backward"] = max(kernels - forward, totals.get("gan3d::backward", 0.0))
    whole = sum(totals.values()) or 1.0
    return {k: totals.get(k, 0.0) / whole for k in SCOPES}


@torch.no_grad()
def bench_generate(cfg: ExperimentConfig, iters: int = 3, device: str = "cpu", batch: int = 4) -> BenchResult:
    dev = torch.device(device)
    torch.manual_seed(0)
    G = build_generator(cfg).to(dev).eval()
    c_dim = G.c_dim
    angles = torch.tensor([[cfg.dataset.camera.yaw_mean, cfg.dataset.camera.pitch_mean, 0.0]] * batch).to(dev)
    c = torch.zeros(batch, c_dim).to(dev) if c_dim else None
    t_warm = time.perf_counter()
    G(torch.randn(batch, G.cfg.z_dim).to(dev), c, angles)  # warm-up
    t_warm = time.perf_counter() - t_warm
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        G(torch.randn(batch, G.cfg.z_dim).to(dev), c, angles)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    rate = batch / statistics.median(times)
    return BenchResult("generate", str(dev), torch.get_num_threads(), iters, batch, batch * iters / sum(times), rate,
                       1000 / rate, _peak_gb(dev), {}, op_paths(), warmup_s=t_warm)


def _worker(rank: int, world: int, cfg_dict: dict, iters: int, rendezvous: str, out: str) -> None:
    import torch.distributed as dist

    from gan3d.config import from_dict

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    cfg = from_dict(cfg_dict)
    res = bench_train(cfg, iters=iters, batch=cfg.training.batch // world, profile=False)
    rate = torch.tensor([res.img_per_s])
    dist.all_reduce(rate)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"img_per_s": float(rate[0])}, f)
    dist.destroy_process_group()


def bench_scaling(cfg: ExperimentConfig, workers: int, iters: int = 3) -> tuple[float, float]:
    """(img/s with `workers` gloo processes, efficiency vs 1 process), each process one thread."""
    import tempfile

    import torch.multiprocessing as mp

    from gan3d.config import to_dict

    rates = []
    for w in (1, workers):
        with tempfile.TemporaryDirectory() as tmp:  # a file rendezvous: no TCP port to collide with another job
            out = os.path.join(tmp, "rate.json")
            mp.spawn(_worker, args=(w, to_dict(cfg), iters, os.path.join(tmp, "rendezvous"), out), nprocs=w, join=True)
            rates.append(json.load(open(out))["img_per_s"])
    return rates[1], rates[1] / (workers * rates[0])


def to_json(res: BenchResult) -> str:
    return json.dumps(asdict(res), indent=1)
