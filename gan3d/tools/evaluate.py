"""`gan3d eval`: metrics of a checkpoint's G_ema; with a run dir, the best checkpoint by the metric the
run tracked (like the seed's networks_dir mode). Generation is chunked, shows progress, and can be spread
over Ray workers."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from gan3d.config import METRICS
from gan3d.errors import ConfigError, DatasetError
from gan3d.training.checkpoint import META, best_checkpoint, load_generator, read_checkpoint


@dataclass
class EvalResult:
    checkpoint: Path
    kimg: float
    values: dict
    protocols: dict
    path: Path  # eval.json

    def table(self) -> str:
        width = max(len(k) for k in self.values) if self.values else 6
        lines = [f"checkpoint {self.checkpoint} (kimg {self.kimg:.3f})", f"{'metric':<{width}}  value"]
        lines += [f"{k:<{width}}  {v:.4f}" for k, v in sorted(self.values.items())]
        return "\n".join(lines)


def ray_generator(ckpt_dir: Path, workers: int, cfg, pool):
    """generate_fn for metrics.evaluate that splits the images over `workers` Ray tasks (each loads G_ema), every
    chunk conditioned on the same dataset entries (`pool`, metrics.conditioning) and seeded by its position.
    Ray is the caller's (the CLI connects with gan3d.orchestrate.runtime.ensure_ray)."""
    import ray

    from gan3d.metrics import generate

    @ray.remote(num_cpus=1)
    def chunk(count: int, seed: int) -> torch.Tensor:
        return generate(load_generator(ckpt_dir), count, cfg, "cpu", seed=seed, pool=pool)

    def generate_fn(n: int, seed: int) -> torch.Tensor:
        size = math.ceil(n / workers)
        return torch.cat(ray.get([chunk.remote(min(size, n - i), seed * 100003 + i) for i in range(0, n, size)]))

    return generate_fn


def evaluate_run(path: str | Path, metrics: Sequence[str], data: Optional[str] = None, mirror: bool = False,
                 num_fakes: Optional[int] = None, workers: int = 1, device: str = "cpu") -> EvalResult:
    """Metrics of a run's best checkpoint (or a checkpoint / reference snapshot) by the reference's protocol;
    `mirror=True` measures against the mirrored set instead (not the paper's protocol)."""
    from gan3d import metrics as metrics_mod
    from gan3d.data import open_dataset
    from gan3d.storage import is_uri, join, resolve_local, upload

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"--metrics {','.join(unknown)}: unknown; expected names from {', '.join(METRICS)}")
    source, _ = best_checkpoint(path)
    ckpt = read_checkpoint(source)
    ckpt_dir, cfg = ckpt.path, ckpt.cfg  # a reference snapshot reads as its converted checkpoint
    data = data or json.loads((ckpt_dir / META).read_text()).get("dataset") or cfg.dataset.path
    if not data:
        raise DatasetError(f"{ckpt_dir}: the checkpoint does not say which dataset it was trained on; pass --data PATH")
    dataset = open_dataset(data, cfg.dataset.resolution, mirror)
    G = load_generator(ckpt_dir, device=device)
    pool = metrics_mod.conditioning(dataset)
    values, protocols = metrics_mod.evaluate(G, dataset, cfg, list(metrics), device, num_fakes=num_fakes,
                                             seed=cfg.training.seed, dataset_id=str(data), mirror=mirror,
                                             generate_fn=ray_generator(ckpt_dir, workers, cfg, pool) if workers > 1
                                             else None, progress=True)
    if source.is_file():  # a reference snapshot: eval.json beside it
        out = source.with_name(f"{source.stem}.eval.json")
    else:
        out = (ckpt_dir.parent if ckpt_dir.parent.name != "checkpoints" else ckpt_dir.parent.parent) / "eval.json"
    out.write_text(json.dumps({"checkpoint": str(ckpt_dir), "kimg": ckpt.counters.kimg, "metrics": values,
                               "protocols": protocols, "dataset": str(data)}, indent=1))
    if is_uri(str(path)) and resolve_local(path) == out.parent:  # a run at a URI gets its eval.json back there
        upload(out, join(str(path), out.name))
    return EvalResult(ckpt_dir, ckpt.counters.kimg, values, protocols, out)
