"""`gan3d train`: one run, on a local Ray that gan3d starts or on a cluster."""
from __future__ import annotations

import sys

from gan3d.cli.options import at_least, command, experiment_args


def register(sub) -> None:
    p = command(sub, "train", "train one run (embedded local Ray, or a cluster with --address)",
                "gan3d train experiments/smoke.yaml --out runs training.kimg=8")
    experiment_args(p)
    p.add_argument("--workers", type=at_least(1), help="Ray Train workers (default: run.workers)")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per worker (0 = CPU, gloo)")
    p.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    p.add_argument("--out", help="output root; the run dir is OUT/NAME (default: run.out)")
    p.add_argument("--name", help="run name (default: the experiment file's stem)")
    p.add_argument("--verbose", action="store_true", help="also show Ray's and Ray Train's own log lines")
    p.set_defaults(handler=run)


def run(args) -> int:
    from gan3d.config import load_config
    from gan3d.orchestrate.launch import train

    cfg = load_config(args.experiment, args.overrides)
    res = train(cfg, workers=args.workers, gpus_per_worker=args.gpus_per_worker, address=args.address,
                out=args.out, name=args.name, verbose=args.verbose, header=True)
    best = f"{res.metric} {res.best_metric:.3f}" if res.best_metric is not None else "no metric"
    print(f"gan3d: run {res.run_dir} at kimg {res.kimg:.3f} ({res.stop_reason}); best {best}; "
          f"best checkpoint {res.best_checkpoint}")
    if res.stop_reason == "user":
        print("gan3d: stopped on request; checkpoint written, rerun the same command to resume", file=sys.stderr)
        return 130
    if res.stop_reason == "diverged":
        print("gan3d: stopped because training diverged (training.stop_on_divergence)", file=sys.stderr)
        return 3
    return 0
