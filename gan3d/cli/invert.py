"""`gan3d invert`: photos -> latent, camera and (PTI) a tuned generator, with novel views and meshes."""
from __future__ import annotations

from pathlib import Path

from gan3d.cli.options import at_least, command, numbers, out_dir


def register(sub) -> None:
    p = command(sub, "invert", "photos -> latent, camera and (PTI) a tuned generator; novel views and meshes",
                "gan3d invert runs/smoke photos/*.png --out inverted --mode pti --workers 2")
    p.add_argument("checkpoint", help="a checkpoint directory or a run directory (its best checkpoint)")
    p.add_argument("images", nargs="+", help="image files or folders of them (RGB or RGBA, any size: --crop, else the "
                   "centred square)")
    p.add_argument("--out", required=True, help="output directory: one folder per image")
    p.add_argument("--mode", default="pti", help="w | wplus | pti (W+ then pivotal tuning)")
    p.add_argument("--steps", type=at_least(1), default=500, help="projection steps")
    p.add_argument("--pti-steps", type=at_least(0), default=350, help="pivotal tuning steps (--mode pti)")
    cam = p.add_mutually_exclusive_group()
    cam.add_argument("--camera", help="YAW,PITCH in radians, gan3d's convention (default: fitted)")
    cam.add_argument("--poses", help="a dataset.json whose camera_angles name the images")
    p.add_argument("--fit-camera", action="store_true", help="refine yaw and pitch even when given")
    p.add_argument("--class", dest="class_index", type=at_least(0), default=0,
                   help="the class the photos show (a conditional model)")
    p.add_argument("--fit-fov", action="store_true", help="fit the field of view too (default: the generator's)")
    p.add_argument("--crop", help="LEFT,TOP,RIGHT,BOTTOM pixel box applied before resizing")
    p.add_argument("--resolution", type=int, default=0, help="fit at this size (default: the training resolution)")
    p.add_argument("--lpips", default="", help="NVIDIA's vgg16.pt for LPIPS (default: $GAN3D_LPIPS_WEIGHTS or the cache)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=at_least(1), default=1, help="spread the images over this many Ray workers")
    p.add_argument("--address", help="Ray cluster HEAD:PORT (default: a local Ray when --workers > 1)")
    p.add_argument("--wandb", action="store_true", help="log metrics and reconstructions to a W&B run (offline unless "
                   "W&B is configured online)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from dataclasses import asdict

    from gan3d.tools.invert_files import expand_images, invert_files, invert_on_ray
    from gan3d.tools.inversion import InvertSettings

    out_dir(args.out)
    settings = InvertSettings(mode=args.mode, steps=args.steps, pti_steps=args.pti_steps, fit_camera=args.fit_camera,
                              fit_fov=args.fit_fov, lpips=args.lpips, seed=args.seed, class_index=args.class_index)
    images = [str(p) for p in expand_images(args.images)]
    kwargs = dict(settings=settings, camera=numbers(args.camera, "--camera", 2), poses=args.poses,
                  crop=numbers(args.crop, "--crop", 4, int), resolution=args.resolution)
    if args.workers > 1 or args.address:
        from gan3d.orchestrate.runtime import ensure_ray

        ensure_ray(args.address)
        rows = invert_on_ray(args.checkpoint, images, args.out, max(args.workers, 1), **kwargs)
    else:
        rows = invert_files(args.checkpoint, images, args.out, **kwargs)
    if args.wandb:  # one W&B run for the batch: a row per image, its metrics and its target | reconstruction
        from gan3d.track.wandb_run import log_job

        log_job("invert", args.out, asdict(settings), [
            {"image_index": i, "psnr": r["psnr"], "ssim": r["ssim"], "ms_ssim": r["ms_ssim"],
             "target": Path(r["out"]) / "target.png", "reconstruction": Path(r["out"]) / "reconstruction.png",
             "caption": Path(r["image"]).name} for i, r in enumerate(rows)])
    print(f"gan3d: inverted {len(rows)} image(s) into {args.out}; mean PSNR "
          f"{sum(r['psnr'] for r in rows) / len(rows):.2f} dB ({rows[0]['perceptual']} as the perceptual term)")
    return 0
