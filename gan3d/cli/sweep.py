"""`gan3d sweep`: a Ray Tune sweep, each trial a Ray Train run; a rerun resumes it."""
from __future__ import annotations

from gan3d.cli.options import command


def register(sub) -> None:
    p = command(sub, "sweep", "a Ray Tune sweep; each trial a Ray Train run; resumable",
                "gan3d sweep experiments/sweeps/smoke.yaml --out sweeps num_samples=2 scheduler.kind=asha")
    p.add_argument("sweep", help="sweep YAML, e.g. experiments/sweeps/smoke.yaml")
    p.add_argument("overrides", nargs="*", help="key=value: sweep keys (num_samples=2, scheduler.kind=asha) "
                                                "or experiment keys (training.kimg=1)")
    p.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep (also automatic on rerun)")
    p.add_argument("--out", help="output root; the sweep dir is OUT/NAME (default: the sweep's 'out')")
    p.add_argument("--verbose", action="store_true", help="also show Tune's tables, the trials' ticks and Ray's logs")
    p.set_defaults(handler=run)


def run(args) -> int:
    from gan3d.orchestrate.sweep import sweep

    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    res = sweep(args.sweep, overrides, address=args.address, resume=args.resume, verbose=args.verbose)
    if res.trials is not None:
        cols = [c for c in res.trials.columns if c.startswith(("config/", "best/")) or c in ("trial_id", "status", "kimg")]
        print(res.trials[cols].to_string(index=False))
    print(f"gan3d: sweep {res.sweep_dir}: best trial {res.best_trial} ({res.metric}); run {res.best_run_dir}; "
          f"checkpoint {res.best_checkpoint}")
    return 0
