"""`gan3d eval`: the metrics of a checkpoint, or of a run's best one, written to eval.json."""
from __future__ import annotations

from gan3d.cli.options import at_least, command


def register(sub) -> None:
    p = command(sub, "eval", "metrics of a checkpoint (or a run's best checkpoint)",
                "gan3d eval runs/smoke --metrics swd,fid2k_full")
    p.add_argument("path", help="a run directory or a checkpoint directory")
    p.add_argument("--metrics", default="fid50k_full", help="comma-separated: fid50k_full,kid50k_full,fid2k_full,swd")
    p.add_argument("--data", help="dataset to compare against (default: the one the run trained on)")
    p.add_argument("--mirror", action="store_true",
                   help="measure against the mirrored set too (not the paper's protocol, which is unflipped)")
    p.add_argument("--num-fakes", type=at_least(1), help="override the protocol's number of generated images")
    p.add_argument("--workers", type=at_least(1), default=1, help="generate on this many Ray workers")
    p.set_defaults(handler=run)


def run(args) -> int:
    from gan3d.tools.evaluate import evaluate_run
    from gan3d.metrics import protocol_line

    if args.workers > 1:
        from gan3d.orchestrate.runtime import ensure_ray

        ensure_ray(None)
    res = evaluate_run(args.path, [m for m in args.metrics.split(",") if m], args.data, args.mirror,
                       args.num_fakes, args.workers)
    print(res.table())
    for name, protocol in sorted(res.protocols.items()):
        print(f"protocol {protocol_line(name, protocol)}")
    print(f"gan3d: wrote {res.path}")
    return 0
