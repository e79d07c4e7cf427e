"""`gan3d dataset ACTION`: make, render, convert, validate and time datasets; each action its own handler."""
from __future__ import annotations

import math

from gan3d.cli.options import command, numbers


def register(sub) -> None:
    p = command(sub, "dataset", "make, render, convert, validate and time datasets",
                "gan3d dataset convert faces.zip faces_parquet --poses eg3d --resolution 256\n  "
                "gan3d dataset render assets/ plants.zip --views-per-asset 64 --labels-from-folders --workers 8")
    actions = p.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")

    q = actions.add_parser("synthetic", help="render a procedural multi-view dataset (zip or folder)")
    q.add_argument("out", help="OUT.zip or a directory")
    q.add_argument("--n", type=int, default=1000, help="number of images")
    q.add_argument("--resolution", type=int, default=64)
    q.add_argument("--kind", default="primitives")
    q.add_argument("--experiment", help="take the camera distribution from this experiment (default: smoke's)")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(handler=synthetic)

    q = actions.add_parser("convert", help="zip/folder -> Parquet shards, or a zip")
    q.add_argument("src")
    q.add_argument("dst", help="a Parquet directory (local or s3://...), or a .zip file")
    q.add_argument("--resolution", type=int, help="resize to this square size")
    q.add_argument("--shard-size", type=int, default=1000, help="images per Parquet file")
    q.add_argument("--poses", default="", help="'eg3d': 25-number EG3D camera labels in dataset.json; 'nerf': "
                   "transforms*.json (NeRF-synthetic / Blender / instant-ngp)")
    q.add_argument("--resize-filter", default="lanczos", help="lanczos | bicubic | bilinear | box")
    q.add_argument("--allow-outliers", action="store_true",
                   help="convert even if some imported cameras disagree with the rest (EG3D: radius, fov, look-at; "
                   "NeRF: look-at, roll, radius)")
    q.set_defaults(handler=convert)

    q = actions.add_parser("render", help="3D assets -> a multi-view dataset, rendered with Blender over Ray")
    q.add_argument("assets", help="a folder of .glb/.gltf/.obj/.fbx/.ply/.stl/.blend files (any nesting)")
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
    q.add_argument("--light", default="studio", help="studio (a dimmer sky, a key and a fill sun; objects learn their "
                   "shape sooner: docs/OBJECTS.md) | neutral (a white sky and one sun): fixed in the world")
    q.add_argument("--labels-from-folders", action="store_true", help="class labels from the first folder level")
    q.add_argument("--format", default="zip", help="zip | parquet")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--workers", type=int, help="renders at once (default: one per CPU of the cluster)")
    q.add_argument("--address", help="Ray cluster HEAD:PORT (default: a local Ray)")
    q.set_defaults(handler=render)

    q = actions.add_parser("validate", help="check a dataset and report every problem; exit 0 only if usable")
    q.add_argument("path")
    q.add_argument("--require-poses", action="store_true", help="every image must have a camera pose")
    q.add_argument("--png", help="write the camera distribution plot here (default: PATH-cameras.png)")
    q.set_defaults(handler=validate)

    q = actions.add_parser("bench", help="images per second the DataLoader delivers from a dataset")
    q.add_argument("path")
    q.add_argument("--batch", type=int, default=64)
    q.add_argument("--loader-workers", type=int, default=2)
    q.add_argument("--images", type=int, default=4000)
    q.set_defaults(handler=bench)


def synthetic(args) -> int:
    from gan3d.config import load_config
    from gan3d.data.synthetic import make_synthetic, smoke_camera

    camera = load_config(args.experiment).dataset.camera if args.experiment else smoke_camera()
    out = make_synthetic(args.out, args.n, args.resolution, camera, args.kind, args.seed)
    print(f"gan3d: wrote {args.n} images of {args.kind} scenes at {args.resolution}px to {out}")
    return 0


def convert(args) -> int:
    from gan3d.data.convert import convert as convert_dataset

    meta = convert_dataset(args.src, args.dst, args.resolution, args.shard_size, args.poses, args.resize_filter,
                           args.allow_outliers)
    for line in meta.pop("report", []):
        print(line)
    what = "a zip (PNGs + dataset.json)" if meta["format"] == "zip" else "Parquet shards"
    print(f"gan3d: wrote {meta['num_images']} images ({meta['resolution']}px) to {args.dst}: {what}")
    return 0


def render(args) -> int:
    from gan3d.config import CAMERA_DISTS, CameraConfig
    from gan3d.data.blender import RenderSettings
    from gan3d.errors import ConfigError
    from gan3d.orchestrate.assets import render_dataset

    if args.camera not in CAMERA_DISTS or args.camera == "dataset":
        raise ConfigError(f"--camera {args.camera!r}: expected one of {', '.join(d for d in CAMERA_DISTS if d != 'dataset')}")
    (y0, y1), (p0, p1) = numbers(args.yaw_range, "--yaw-range", 2), numbers(args.pitch_range, "--pitch-range", 2)
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


def validate(args) -> int:
    from gan3d.data.validate import validate as validate_dataset

    png = args.png or f"{str(args.path).rstrip('/')}-cameras.png"
    rep = validate_dataset(args.path, need_poses=args.require_poses, png=png)
    for line in rep.lines():
        print(line)
    print(f"camera plot: {png}")
    return 0 if rep.ok else 1


def bench(args) -> int:
    from gan3d.data.throughput import loader_throughput

    rate = loader_throughput(args.path, args.batch, args.loader_workers, args.images)
    print(f"gan3d: {args.path}: {rate:,.0f} img/s (batch {args.batch}, {args.loader_workers} loader workers)")
    return 0
