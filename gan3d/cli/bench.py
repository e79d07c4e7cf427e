"""`gan3d bench`: throughput, memory and time shares of a config on this hardware (docs/PERF.md)."""
from __future__ import annotations

import json

from gan3d.cli.options import at_least, command, default_device, experiment_args


def register(sub) -> None:
    p = command(sub, "bench", "throughput and memory of a config on this hardware",
                "gan3d bench experiments/bench_ref.yaml --iters 3 --json")
    experiment_args(p)
    p.add_argument("--iters", type=at_least(1), default=5, help="timed iterations after warm-up")
    p.add_argument("--warmup", type=at_least(0), default=1)
    p.add_argument("--mode", choices=["train", "generate", "invert"], default="train",
                   help="invert: inversion of renders of known latents (PSNR, novel views)")
    p.add_argument("--device", default=default_device())
    p.add_argument("--workers", type=at_least(1), default=1, help="also measure gloo scaling over N processes")
    p.add_argument("--plan", action="store_true", help="find the largest batch_gpu that fits memory")
    p.add_argument("--memory", action="store_true", help="bytes saved for backward per image, by module and phase "
                   "(and with PyTorch's own ops, for comparison)")
    p.add_argument("--batch", type=at_least(1), default=2, help="images for --memory (its numbers are per image)")
    p.add_argument("--compare", action="store_true", help="reference ops vs fast paths, alternated in one run")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=run)


def run(args) -> int:
    from gan3d.config import load_config

    cfg = load_config(args.experiment, args.overrides)
    if args.memory:
        return _memory(cfg, args)
    if args.plan:
        return _plan(cfg, args)
    if args.compare:
        return _compare(cfg, args)
    if args.mode == "invert":
        return _invert(cfg, args)
    return _throughput(cfg, args)


def _memory(cfg, args) -> int:
    from gan3d.tools.bench_memory import compare_lean

    lean_run, plain_run = compare_lean(cfg, args.device, args.batch)
    if args.json:
        print(json.dumps({"lean": lean_run.phases, "pytorch_ops": plain_run.phases, "batch": args.batch,
                          "peak_gb": lean_run.peak_gb}, indent=1))
        return 0
    print("\n".join(lean_run.lines()))
    big, ref = lean_run.total(lean_run.largest), plain_run.total(plain_run.largest)
    print(f"with PyTorch's own ops (gan3d.nn.lean off): {ref / 2**20:.2f} MiB per image in {plain_run.largest}; "
          f"lean saves {ref / big:.2f}x less")
    return 0


def _plan(cfg, args) -> int:
    from gan3d.tools.bench_memory import plan_batch

    plan = plan_batch(cfg, args.device)
    print(json.dumps(plan, indent=1) if args.json else
          f"gan3d: largest batch_gpu that fits {plan['budget_gb']:.1f} GB: {plan['batch_gpu']} "
          f"(accumulation {plan['accumulation']}); peak GB by batch {plan['peak_gb_by_batch']}")
    return 0


def _compare(cfg, args) -> int:
    from gan3d.tools.bench import compare_fast_paths

    cmp = compare_fast_paths(cfg, args.iters, device=args.device)
    print(json.dumps(cmp, indent=1) if args.json else "\n".join(
        f"{name:>24}: {rate:.3f} img/s ({cmp['speedup_vs_reference'][name]:.2f}x reference ops)"
        for name, rate in cmp["img_per_s"].items()))
    return 0


def _invert(cfg, args) -> int:
    from gan3d.tools.inversion_quality import measure_inversion

    inv = measure_inversion(cfg)
    print(json.dumps(inv, indent=1) if args.json else "\n".join(
        [f"gan3d: inversion of {inv['images']} renders of known latents at {inv['resolution']} px "
         f"({inv['steps']} + {inv['pti_steps']} steps); the mean latent's novel views: "
         f"{inv['mean_latent_novel_psnr']:.2f} dB"] +
        [f"{m:>6}: PSNR {r['psnr']:.2f} dB, novel views (+-30 deg yaw) {r['novel_psnr']:.2f} dB, "
         f"{r['sec_per_image']:.1f} s/image" for m, r in inv["modes"].items()]))
    return 0


def _throughput(cfg, args) -> int:
    from gan3d.tools import bench

    res = (bench.bench_generate(cfg, args.iters, args.device) if args.mode == "generate"
           else bench.bench_train(cfg, args.iters, args.warmup, args.device))
    if args.workers > 1:
        res.workers = args.workers
        _, res.scaling_efficiency = bench.bench_scaling(cfg, args.workers, args.iters)
    print(bench.to_json(res) if args.json else "\n".join(res.lines()))
    return 0
