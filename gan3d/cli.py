"""The `gan3d` command: a thin argparse front end over the Python API. Every user error is one line
("gan3d: error: ...") and exit status 2."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Optional, Sequence

from gan3d.errors import ConfigError, Gan3dError

NOT_YET: dict[str, str] = {}  # commands announced before they exist
EXAMPLES = {  # shown at the end of each command's --help
    "train": "gan3d train experiments/smoke.yaml --out runs training.kimg=8",
    "sweep": "gan3d sweep experiments/sweeps/smoke.yaml --out sweeps num_samples=2 scheduler.kind=asha",
    "bench": "gan3d bench experiments/bench_ref.yaml --iters 3 --json",
    "eval": "gan3d eval runs/smoke --metrics swd,fid2k_full",
    "render": "gan3d render runs/smoke --vis video --seeds 0-3 --out renders",
    "report": "gan3d report runs/smoke sweeps/smoke --out report.html",
    "invert": "gan3d invert runs/smoke photos/*.png --out inverted --mode pti --workers 2",
    "describe": "gan3d describe experiments/ffhq512.yaml training.patch.resolution=32",
    "import-checkpoint": "gan3d import-checkpoint network-snapshot-025000.pkl ckpt/ffhq --preset experiments/ffhq512.yaml",
    "dataset": "gan3d dataset convert faces.zip faces_parquet --poses eg3d --resolution 256\n  "
               "gan3d dataset render assets/ plants.zip --views-per-asset 64 --labels-from-folders --workers 8",
    "submit": "gan3d submit --address http://HEAD:8265 -- gan3d sweep experiments/sweeps/smoke.yaml",
}


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="experiment YAML, e.g. experiments/smoke.yaml")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. training.gamma=0.1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan3d", description="EpiGRAF-style 3D-aware GANs on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one run (embedded local Ray, or a cluster with --address)")
    _experiment_args(p)
    p.add_argument("--workers", type=int, help="Ray Train workers (default: run.workers)")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per worker (0 = CPU, gloo)")
    p.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    p.add_argument("--out", help="output root; the run dir is OUT/NAME (default: run.out)")
    p.add_argument("--name", help="run name (default: the experiment file's stem)")
    p.add_argument("--verbose", action="store_true", help="also show Ray's and Ray Train's own log lines")

    p = sub.add_parser("sweep", help="a Ray Tune sweep; each trial a Ray Train run; resumable")
    p.add_argument("sweep", help="sweep YAML, e.g. experiments/sweeps/smoke.yaml")
    p.add_argument("overrides", nargs="*", help="key=value: sweep keys (num_samples=2, scheduler.kind=asha) "
                                                "or experiment keys (training.kimg=1)")
    p.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep (also automatic on rerun)")
    p.add_argument("--out", help="output root; the sweep dir is OUT/NAME (default: the sweep's 'out')")
    p.add_argument("--verbose", action="store_true", help="also show Tune's tables, the trials' ticks and Ray's logs")

    p = sub.add_parser("bench", help="throughput and memory of a config on this hardware")
    _experiment_args(p)
    p.add_argument("--iters", type=int, default=5, help="timed iterations after warm-up")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--mode", choices=["train", "generate", "invert"], default="train",
                   help="invert: inversion of renders of known latents (PSNR, novel views)")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--workers", type=int, default=1, help="also measure gloo scaling over N processes")
    p.add_argument("--plan", action="store_true", help="find the largest batch_gpu that fits memory")
    p.add_argument("--compare", action="store_true", help="reference ops vs fast paths, alternated in one run")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = sub.add_parser("eval", help="metrics of a checkpoint (or a run's best checkpoint)")
    p.add_argument("path", help="a run directory or a checkpoint directory")
    p.add_argument("--metrics", default="fid50k_full", help="comma-separated: fid50k_full,kid50k_full,fid2k_full,swd")
    p.add_argument("--data", help="dataset to compare against (default: the one the run trained on)")
    p.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=None, help="x-flip the reals too")
    p.add_argument("--num-fakes", type=int, help="override the protocol's number of generated images")
    p.add_argument("--workers", type=int, default=1, help="generate on this many Ray workers")

    p = sub.add_parser("render", help="image grids, videos, interpolations, density slices and meshes")
    p.add_argument("checkpoint", help="a checkpoint directory or a run directory (its best checkpoint)")
    p.add_argument("--vis", default="front_grid", help="front_grid | video | video_grid | interp | density | geometry")
    p.add_argument("--camera", default="front_circle", help="front_circle | points | line | wiggle")
    p.add_argument("--seeds", default="0-15", help="e.g. 0-15 or 1,4,9")
    p.add_argument("--truncation-psi", type=float, default=0.7)
    p.add_argument("--resolution", type=int, help="render resolution (default: the training resolution)")
    p.add_argument("--ray-step-multiplier", type=float, default=1.0, help="multiply the samples per ray")
    p.add_argument("--frames", type=int, default=48, help="frames of a camera path")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--grid-resolution", type=int, default=128, help="density grid size (density, geometry)")
    p.add_argument("--cube-size", type=float, help="side of the density cube in world units (default 2 x cube_scale)")
    p.add_argument("--out", required=True, help="output directory")

    p = sub.add_parser("invert", help="photos -> latent, camera and (PTI) a tuned generator; novel views and meshes")
    p.add_argument("checkpoint", help="a checkpoint directory or a run directory (its best checkpoint)")
    p.add_argument("images", nargs="+", help="image files or folders of them (RGB or RGBA, any size: --crop, else the "
                   "centred square)")
    p.add_argument("--out", required=True, help="output directory: one folder per image")
    p.add_argument("--mode", default="pti", help="w | wplus | pti (W+ then pivotal tuning)")
    p.add_argument("--steps", type=int, default=500, help="projection steps")
    p.add_argument("--pti-steps", type=int, default=350, help="pivotal tuning steps (--mode pti)")
    cam = p.add_mutually_exclusive_group()
    cam.add_argument("--camera", help="YAW,PITCH in radians, gan3d's convention (default: fitted)")
    cam.add_argument("--poses", help="a dataset.json whose camera_angles name the images")
    p.add_argument("--fit-camera", action="store_true", help="refine yaw and pitch even when given")
    p.add_argument("--crop", help="LEFT,TOP,RIGHT,BOTTOM pixel box applied before resizing")
    p.add_argument("--resolution", type=int, default=0, help="fit at this size (default: the training resolution)")
    p.add_argument("--lpips", default="", help="NVIDIA's vgg16.pt for LPIPS (default: $GAN3D_LPIPS_WEIGHTS or the cache)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="spread the images over this many Ray workers")
    p.add_argument("--address", help="Ray cluster HEAD:PORT (default: a local Ray when --workers > 1)")
    p.add_argument("--wandb", action="store_true", help="log metrics and reconstructions to a W&B run (offline unless "
                   "W&B is configured online)")

    p = sub.add_parser("report", help="an HTML comparison of runs and sweeps (and a W&B Report)")
    p.add_argument("paths", nargs="+", help="run directories and/or sweep directories")
    p.add_argument("--out", default="report.html")
    p.add_argument("--metric", default="swd", help="the metric to rank and plot against hyperparameters")
    p.add_argument("--wandb", action="store_true", help="also build the W&B Report (saved when W&B is online)")

    p = sub.add_parser("import-checkpoint", help="a reference EpiGRAF snapshot (.pkl, nothing in it is run) or "
                                                 "state dict -> a gan3d checkpoint")
    p.add_argument("source", help="network-snapshot-<kimg>.pkl, or a .pt/.pth state dict in the reference's naming")
    p.add_argument("out", help="the gan3d checkpoint directory to write")
    p.add_argument("--preset", help="experiment YAML for what a snapshot does not record (data, training settings)")

    p = sub.add_parser("describe", help="print the resolved config and model sizes")
    _experiment_args(p)

    p = sub.add_parser("dataset", help="make, convert and validate datasets")
    dsub = p.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    q = dsub.add_parser("synthetic", help="render a procedural multi-view dataset (zip or folder)")
    q.add_argument("out", help="OUT.zip or a directory")
    q.add_argument("--n", type=int, default=1000, help="number of images")
    q.add_argument("--resolution", type=int, default=64)
    q.add_argument("--kind", default="primitives")
    q.add_argument("--experiment", help="take the camera distribution from this experiment (default: smoke's)")
    q.add_argument("--seed", type=int, default=0)
    q = dsub.add_parser("convert", help="zip/folder -> Parquet shards")
    q.add_argument("src")
    q.add_argument("dst")
    q.add_argument("--resolution", type=int, help="resize to this square size")
    q.add_argument("--shard-size", type=int, default=1000, help="images per Parquet file")
    q.add_argument("--poses", default="", help="'eg3d': 25-number EG3D camera labels in dataset.json; 'nerf': "
                   "transforms*.json (NeRF-synthetic / Blender / instant-ngp)")
    q.add_argument("--resize-filter", default="lanczos", help="lanczos | bicubic | bilinear | box")
    q.add_argument("--allow-outliers", action="store_true",
                   help="convert even if some imported cameras disagree with the rest (radius, fov, look-at)")
    q = dsub.add_parser("render", help="3D assets -> a multi-view dataset, rendered with Blender over Ray")
    q.add_argument("assets", help="a folder of .glb/.gltf/.obj/.fbx/.blend files (any nesting)")
    q.add_argument("out", help="the dataset: a .zip, or a Parquet dir with --format parquet (local or s3://...)")
    q.add_argument("--views-per-asset", type=int, default=64)
    q.add_argument("--resolution", type=int, default=256)
    q.add_argument("--camera", default="spherical_uniform", help="spherical_uniform | uniform | normal | "
                   "truncated_gaussian | hybrid (gan3d's camera samplers)")
    q.add_argument("--fov", type=float, default=30.0, help="degrees, full horizontal (dataset.camera.fov)")
    q.add_argument("--radius", type=float, default=1.0, help="camera distance from the asset's centre")
    q.add_argument("--yaw-range", default=f"{-math.pi:.6f},{math.pi:.6f}", help="LO,HI radians (normal: mean +- std)")
    q.add_argument("--pitch-range", default=f"0,{math.pi:.6f}", help="LO,HI radians from the +y pole")
    q.add_argument("--engine", default="cycles", help="cycles | eevee")
    q.add_argument("--samples", type=int, default=64, help="Cycles samples per pixel")
    q.add_argument("--background", default="white", help="white | transparent")
    q.add_argument("--labels-from-folders", action="store_true", help="class labels from the first folder level")
    q.add_argument("--format", default="zip", help="zip | parquet")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--workers", type=int, help="renders at once (default: one per CPU of the cluster)")
    q.add_argument("--address", help="Ray cluster HEAD:PORT (default: a local Ray)")
    q = dsub.add_parser("validate", help="check a dataset and report every problem; exit 0 only if usable")
    q.add_argument("path")
    q.add_argument("--require-poses", action="store_true", help="every image must have a camera pose")
    q.add_argument("--png", help="write the camera distribution plot here (default: PATH-cameras.png)")

    q = dsub.add_parser("bench", help="images per second the DataLoader delivers from a dataset")
    q.add_argument("path")
    q.add_argument("--batch", type=int, default=64)
    q.add_argument("--loader-workers", type=int, default=2)
    q.add_argument("--images", type=int, default=4000)

    p = sub.add_parser("download-inception", help="fetch the standard FID Inception weights (needs internet)")
    p.add_argument("--dest", help="file to write (default: ~/.cache/gan3d/)")

    p = sub.add_parser("submit", help="run a gan3d command on a Ray cluster through the Ray Jobs API")
    p.add_argument("--address", required=True, help="the dashboard URL, e.g. http://HEAD:8265")
    p.add_argument("--working-dir", help="upload this directory as the job's working dir")
    p.add_argument("--pip", nargs="*", help="pip packages for the job's runtime env (e.g. a gan3d wheel)")
    p.add_argument("--env", nargs="*", default=[], help="KEY=VALUE environment variables for the job")
    p.add_argument("--no-wait", action="store_true", help="return the job id without streaming logs")
    p.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- then the command, e.g. -- gan3d sweep S.yaml")
    for name, what in (("status", "the status of a submitted job"), ("logs", "the logs of a submitted job")):
        q = sub.add_parser(name, help=what)
        q.add_argument("job_id")
        q.add_argument("--address", required=True, help="the dashboard URL, e.g. http://HEAD:8265")

    for cmd, example in EXAMPLES.items():
        sub.choices[cmd].epilog = "example:\n  " + example
        sub.choices[cmd].formatter_class = argparse.RawDescriptionHelpFormatter
    for cmd, why in NOT_YET.items():
        q = sub.add_parser(cmd, help=f"(not yet: {why})")
        q.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _train(args) -> int:
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


def _sweep(args) -> int:
    from gan3d.orchestrate.sweep import sweep

    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    res = sweep(args.sweep, overrides, address=args.address, resume=args.resume, verbose=args.verbose)
    if res.trials is not None:
        cols = [c for c in res.trials.columns if c.startswith(("config/", "best/")) or c in ("trial_id", "status", "kimg")]
        print(res.trials[cols].to_string(index=False))
    print(f"gan3d: sweep {res.sweep_dir}: best trial {res.best_trial} ({res.metric}); run {res.best_run_dir}; "
          f"checkpoint {res.best_checkpoint}")
    return 0


def _bench(args) -> int:
    import json

    from gan3d import bench
    from gan3d.config import load_config

    cfg = load_config(args.experiment, args.overrides)
    if args.plan:
        plan = bench.plan_batch(cfg, args.device)
        print(json.dumps(plan, indent=1) if args.json else
              f"gan3d: largest batch_gpu that fits {plan['budget_gb']:.1f} GB: {plan['batch_gpu']} "
              f"(accumulation {plan['accumulation']}); peak GB by batch {plan['peak_gb_by_batch']}")
        return 0
    if args.compare:
        cmp = bench.compare_fast_paths(cfg, args.iters, device=args.device)
        print(json.dumps(cmp, indent=1) if args.json else "\n".join(
            f"{name:>24}: {rate:.3f} img/s ({cmp['speedup_vs_reference'][name]:.2f}x reference ops)"
            for name, rate in cmp["img_per_s"].items()))
        return 0
    if args.mode == "invert":
        inv = bench.bench_invert(cfg)
        print(json.dumps(inv, indent=1) if args.json else "\n".join(
            [f"gan3d: inversion of {inv['images']} renders of known latents at {inv['resolution']} px "
             f"({inv['steps']} + {inv['pti_steps']} steps); the mean latent's novel views: "
             f"{inv['mean_latent_novel_psnr']:.2f} dB"] +
            [f"{m:>6}: PSNR {r['psnr']:.2f} dB, novel views (+-30 deg yaw) {r['novel_psnr']:.2f} dB, "
             f"{r['sec_per_image']:.1f} s/image" for m, r in inv["modes"].items()]))
        return 0
    if args.mode == "generate":
        res = bench.bench_generate(cfg, args.iters, args.device)
    else:
        res = bench.bench_train(cfg, args.iters, args.warmup, args.device)
    if args.workers > 1:
        res.workers = args.workers
        _, res.scaling_efficiency = bench.bench_scaling(cfg, args.workers, args.iters)
    print(bench.to_json(res) if args.json else "\n".join(res.lines()))
    return 0


def _eval(args) -> int:
    from gan3d.evaluate import evaluate_run

    res = evaluate_run(args.path, [m for m in args.metrics.split(",") if m], args.data, args.mirror,
                       args.num_fakes, args.workers)
    print(res.table())
    print(f"gan3d: wrote {res.path}")
    return 0


def _render(args) -> int:
    from gan3d.training.checkpoint import best_checkpoint, load_generator
    from gan3d.visualize import VIS, parse_seeds, render

    if args.vis not in VIS:  # fail before loading anything
        raise ConfigError(f"--vis {args.vis!r}: expected one of {', '.join(VIS)}")
    ckpt, _ = best_checkpoint(args.checkpoint)
    G = load_generator(ckpt, ray_step_multiplier=args.ray_step_multiplier)
    files = render(G, args.vis, parse_seeds(args.seeds), args.out, args.camera, args.truncation_psi, args.resolution,
                   args.frames, args.fps, args.grid_resolution, args.cube_size)
    for f in files:
        print(f"gan3d: wrote {f}")
    return 0


def _numbers(text: Optional[str], flag: str, n: int, kind=float) -> Optional[list]:
    if text is None:
        return None
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n:
        raise ConfigError(f"{flag} {text!r}: expected {n} comma-separated numbers")
    return values


def _log_inversions(rows: list[dict], out: str, settings) -> None:
    """One W&B run for the batch: a row per image (metrics and its target | reconstruction)."""
    from dataclasses import asdict
    from pathlib import Path

    import wandb

    from gan3d.config import LoggingConfig
    from gan3d.track.wandb_run import resolve_mode

    run = wandb.init(project=LoggingConfig().project, job_type="invert", dir=out, config=asdict(settings),
                     mode=resolve_mode(LoggingConfig()))
    for i, r in enumerate(rows):
        d = Path(r["out"])
        run.log({"image_index": i, "psnr": r["psnr"], "ssim": r["ssim"], "ms_ssim": r["ms_ssim"],
                 "target": wandb.Image(str(d / "target.png"), caption=Path(r["image"]).name),
                 "reconstruction": wandb.Image(str(d / "reconstruction.png"), caption=Path(r["image"]).name)})
    run.finish()


def _invert(args) -> int:
    from gan3d.inversion import InvertSettings, expand_images, invert_files, invert_on_ray

    settings = InvertSettings(mode=args.mode, steps=args.steps, pti_steps=args.pti_steps, fit_camera=args.fit_camera,
                              lpips=args.lpips, seed=args.seed)
    images = [str(p) for p in expand_images(args.images)]
    kwargs = dict(settings=settings, camera=_numbers(args.camera, "--camera", 2), poses=args.poses,
                  crop=_numbers(args.crop, "--crop", 4, int), resolution=args.resolution)
    if args.workers > 1 or args.address:
        from gan3d.orchestrate.launch import _ensure_ray

        _ensure_ray(args.address)
        rows = invert_on_ray(args.checkpoint, images, args.out, max(args.workers, 1), **kwargs)
    else:
        rows = invert_files(args.checkpoint, images, args.out, **kwargs)
    if args.wandb:
        _log_inversions(rows, args.out, settings)
    print(f"gan3d: inverted {len(rows)} image(s) into {args.out}; mean PSNR "
          f"{sum(r['psnr'] for r in rows) / len(rows):.2f} dB ({rows[0]['perceptual']} as the perceptual term)")
    return 0


def _report(args) -> int:
    from gan3d.report import wandb_report, write_html

    out = write_html(args.paths, args.out, args.metric)
    print(f"gan3d: wrote {out}")
    if args.wandb:
        url, definition = wandb_report(args.paths, args.out, args.metric)
        print(f"gan3d: W&B report saved at {url}" if url else
              f"gan3d: W&B is offline; the report's definition is in {definition} (publish it when online)")
    return 0


def _jobs(args) -> int:
    from gan3d.orchestrate import jobs

    if args.command == "status":
        print(jobs.status(args.address, args.job_id))
        return 0
    if args.command == "logs":
        print(jobs.logs(args.address, args.job_id), end="")
        return 0
    entry = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
    env = dict(item.split("=", 1) for item in args.env)
    job_id, status = jobs.submit(args.address, entry, args.working_dir, env, args.pip, wait=not args.no_wait)
    print(f"gan3d: job {job_id}: {status}")
    return 0 if args.no_wait or status == "SUCCEEDED" else 1


def _describe(args) -> int:
    from gan3d import config as config_mod
    from gan3d.nn import build_discriminator, build_generator, count_parameters

    cfg = config_mod.load_config(args.experiment, args.overrides)
    print(config_mod.to_yaml(cfg))
    G, D = build_generator(cfg), build_discriminator(cfg)
    g = cfg.model.generator
    print(f"generator:     {count_parameters(G):>12,} parameters (mapping {count_parameters(G.mapping):,}, "
          f"synthesis {count_parameters(G.synthesis):,}, decoder {count_parameters(G.decoder):,}); "
          f"tri-plane 3 x {g.triplane_channels} x {g.triplane_resolution}^2")
    print(f"discriminator: {count_parameters(D):>12,} parameters; {D.num_extra} extra start blocks at "
          f"{cfg.training.patch.resolution}px patches of {cfg.dataset.resolution}px images")
    return 0


def _dataset(args) -> int:
    if args.dataset_command == "synthetic":
        from gan3d.config import load_config
        from gan3d.data.synthetic import make_synthetic, smoke_camera

        camera = load_config(args.experiment).dataset.camera if args.experiment else smoke_camera()
        out = make_synthetic(args.out, args.n, args.resolution, camera, args.kind, args.seed)
        print(f"gan3d: wrote {args.n} images of {args.kind} scenes at {args.resolution}px to {out}")
        return 0
    if args.dataset_command == "convert":
        from gan3d.data.convert import convert

        meta = convert(args.src, args.dst, args.resolution, args.shard_size, args.poses, args.resize_filter,
                       args.allow_outliers)
        for line in meta.pop("report", []):
            print(line)
        print(f"gan3d: wrote {meta['num_images']} images ({meta['resolution']}px) to {args.dst}")
        return 0
    if args.dataset_command == "render":
        return _dataset_render(args)
    if args.dataset_command == "bench":
        from gan3d.data.throughput import loader_throughput

        rate = loader_throughput(args.path, args.batch, args.loader_workers, args.images)
        print(f"gan3d: {args.path}: {rate:,.0f} img/s (batch {args.batch}, {args.loader_workers} loader workers)")
        return 0
    from gan3d.data.validate import validate

    png = args.png or f"{str(args.path).rstrip('/')}-cameras.png"
    rep = validate(args.path, need_poses=args.require_poses, png=png)
    for line in rep.lines():
        print(line)
    print(f"camera plot: {png}")
    return 0 if rep.ok else 1


def _dataset_render(args) -> int:
    from gan3d.config import CAMERA_DISTS, CameraConfig
    from gan3d.data.blender import RenderSettings
    from gan3d.orchestrate.assets import render_dataset

    if args.camera not in CAMERA_DISTS or args.camera == "dataset":
        raise ConfigError(f"--camera {args.camera!r}: expected one of {', '.join(d for d in CAMERA_DISTS if d != 'dataset')}")
    (y0, y1), (p0, p1) = _numbers(args.yaw_range, "--yaw-range", 2), _numbers(args.pitch_range, "--pitch-range", 2)
    if not (y0 < y1 and 0 <= p0 < p1 <= math.pi + 1e-6 and 0 < args.fov < 180 and args.radius > 0):
        raise ConfigError("--yaw-range / --pitch-range / --fov / --radius: expected LO < HI, pitch within [0, pi], "
                          "fov in (0, 180), radius > 0")
    camera = CameraConfig(fov=args.fov, radius=args.radius, dist=args.camera, yaw_mean=(y0 + y1) / 2,
                          yaw_std=(y1 - y0) / 2, pitch_mean=(p0 + p1) / 2, pitch_std=(p1 - p0) / 2)
    settings = RenderSettings(views=args.views_per_asset, resolution=args.resolution, camera=camera,
                              engine=args.engine, samples=args.samples, background=args.background, seed=args.seed)
    res = render_dataset(args.assets, args.out, settings, args.workers, args.labels_from_folders, args.format,
                         args.address)
    print(f"gan3d: wrote {res['images']} images of {res['assets']} asset(s) to {res['out']}"
          + (f" ({len(res['classes'])} classes)" if res["classes"] else "")
          + f"; {res['sec_per_image']:.2f} s per image" + (f"; {len(res['failed'])} failed" if res["failed"] else ""))
    return 1 if res["failed"] else 0


def _import_checkpoint(args) -> int:
    from gan3d.training.checkpoint import import_reference

    out, report = import_reference(args.source, args.out, args.preset)
    for line in report:
        print(f"  {line}")
    print(f"gan3d: wrote {out} (render, eval and training.resume= open it like any gan3d checkpoint)")
    return 0


def _download_inception(args) -> int:
    from gan3d.metrics.inception import download_weights
    print(f"gan3d: wrote {download_weights(args.dest)}")
    return 0


COMMANDS = {"train": _train, "sweep": _sweep, "eval": _eval, "render": _render, "invert": _invert, "report": _report,
            "bench": _bench,
            "describe": _describe, "dataset": _dataset, "submit": _jobs, "status": _jobs, "logs": _jobs,
            "download-inception": _download_inception, "import-checkpoint": _import_checkpoint}


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Options and key=value overrides in any order: `gan3d train E.yaml --out runs training.kimg=8` works.
    Words argparse leaves over that look like key=value become overrides of commands that take them."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    stray = [w for w in rest if w.startswith("-") or "=" not in w or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if rest:
        args.overrides = list(args.overrides) + rest
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    try:
        if args.command in NOT_YET:
            print(f"gan3d {args.command}: not yet: {NOT_YET[args.command]}", file=sys.stderr)
            return 2
        return COMMANDS[args.command](args)
    except Gan3dError as e:
        print(f"gan3d: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gan3d: aborted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
