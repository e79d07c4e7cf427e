"""`gan3d render`: grids, videos along camera paths, interpolations, density slices and meshes of a checkpoint."""
from __future__ import annotations

from pathlib import Path

from gan3d.cli.options import at_least, command, out_dir


def register(sub) -> None:
    p = command(sub, "render", "image grids, videos, interpolations, density slices and meshes",
                "gan3d render runs/smoke --vis video --seeds 0-3 --out renders")
    p.add_argument("checkpoint", help="a checkpoint directory or a run directory (its best checkpoint)")
    p.add_argument("--vis", default="front_grid", help="front_grid | video | video_grid | interp | density | geometry")
    p.add_argument("--camera", default="auto", help="auto | front_circle | orbit | points | line | wiggle, around the "
                   "views the model trained on (auto: a full orbit when they go all around the object, else "
                   "front_circle)")
    p.add_argument("--class", dest="class_index", type=at_least(0), default=0,
                   help="the class to render (a conditional model)")
    p.add_argument("--seeds", default="0-15", help="e.g. 0-15 or 1,4,9")
    p.add_argument("--truncation-psi", type=float, default=0.7)
    p.add_argument("--resolution", type=int, help="render resolution (default: the training resolution)")
    p.add_argument("--ray-step-multiplier", type=float, default=1.0, help="multiply the samples per ray")
    p.add_argument("--frames", type=at_least(1), default=48, help="frames of a camera path")
    p.add_argument("--fps", type=at_least(1), default=30)
    p.add_argument("--grid-resolution", type=at_least(2), default=128, help="density grid size (density, geometry)")
    p.add_argument("--cube-size", type=float, help="side of the density cube in world units (default 2 x cube_scale)")
    p.add_argument("--out", help="output directory (default: renders/ beside the checkpoint)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from gan3d.errors import ConfigError
    from gan3d.training.checkpoint import best_checkpoint, load_generator
    from gan3d.tools.visualize import VIS, parse_seeds, render

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
