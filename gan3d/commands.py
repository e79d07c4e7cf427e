"""What each `gan3d` command does with its parsed arguments (gan3d.cli parses them): thin calls into the Python
API, printing its results. Every handler returns the exit status."""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

from gan3d.errors import ConfigError


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
    if args.memory:
        from gan3d.bench_memory import compare_lean

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
    if args.plan:
        from gan3d.bench_memory import plan_batch

        plan = plan_batch(cfg, args.device)
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
        from gan3d.inversion_quality import measure_inversion

        inv = measure_inversion(cfg)
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
    from gan3d.metrics import protocol_line
    for name, protocol in sorted(res.protocols.items()):
        print(f"protocol {protocol_line(name, protocol)}")
    print(f"gan3d: wrote {res.path}")
    return 0


def _render(args) -> int:
    from gan3d.training.checkpoint import best_checkpoint, load_generator
    from gan3d.visualize import VIS, parse_seeds, render

    if args.vis not in VIS:  # fail before loading anything
        raise ConfigError(f"--vis {args.vis!r}: expected one of {', '.join(VIS)}")
    if args.out:
        out_dir(args.out)
    ckpt, _ = best_checkpoint(args.checkpoint)
    out = out_dir(args.out or str(Path(ckpt).parent / "renders" / Path(ckpt).stem))
    G = load_generator(ckpt, ray_step_multiplier=args.ray_step_multiplier)
    G.check_class(args.class_index)
    files = render(G, args.vis, parse_seeds(args.seeds), out, args.camera, args.truncation_psi, args.resolution,
                   args.frames, args.fps, args.grid_resolution, args.cube_size, args.class_index)
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
    if len(values) != n or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{flag} {text!r}: expected {n} comma-separated finite numbers")
    return values


def out_dir(path: str, flag: str = "--out") -> str:
    """An output directory (new or existing): refused before any work if a file is in its place."""
    from pathlib import Path

    if Path(path).exists() and not Path(path).is_dir():
        raise ConfigError(f"{flag} {path}: a file is there; expected a directory (new or existing)")
    return path


def out_file(path: str, flag: str = "--out") -> str:
    """An output file: refused before any work if a directory is in its place."""
    from pathlib import Path

    if Path(path).is_dir():
        raise ConfigError(f"{flag} {path}: a directory is there; expected a file path, e.g. {Path(path) / 'report.html'}")
    return path


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
    from gan3d.invert_files import expand_images, invert_files, invert_on_ray
    from gan3d.inversion import InvertSettings

    out_dir(args.out)
    settings = InvertSettings(mode=args.mode, steps=args.steps, pti_steps=args.pti_steps, fit_camera=args.fit_camera,
                              fit_fov=args.fit_fov, lpips=args.lpips, seed=args.seed, class_index=args.class_index)
    images = [str(p) for p in expand_images(args.images)]
    kwargs = dict(settings=settings, camera=_numbers(args.camera, "--camera", 2), poses=args.poses,
                  crop=_numbers(args.crop, "--crop", 4, int), resolution=args.resolution)
    if args.workers > 1 or args.address:
        from gan3d.orchestrate.runtime import ensure_ray

        ensure_ray(args.address)
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

    out = write_html(args.paths, out_file(args.out), args.metric)
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
        what = "a zip (PNGs + dataset.json)" if meta["format"] == "zip" else "Parquet shards"
        print(f"gan3d: wrote {meta['num_images']} images ({meta['resolution']}px) to {args.dst}: {what}")
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
                              engine=args.engine, samples=args.samples, background=args.background, seed=args.seed,
                              light=args.light)
    res = render_dataset(args.assets, args.out, settings, args.workers, args.labels_from_folders, args.format,
                         args.address)
    print(f"gan3d: wrote {res['images']} images of {res['assets']} asset(s) to {res['out']}"
          + (f" ({len(res['classes'])} classes)" if res["classes"] else "")
          + f"; {res['sec_per_image']:.2f} s per image" + (f"; {len(res['failed'])} failed" if res["failed"] else ""))
    return 1 if res["failed"] else 0


def _import_checkpoint(args) -> int:
    from gan3d.training.checkpoint import import_reference

    out, report = import_reference(args.source, out_dir(args.out, "OUT"), args.preset)
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
