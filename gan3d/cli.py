"""The `gan3d` command: a thin argparse front end over the Python API. Every user error is one line
("gan3d: error: ...") and exit status 2."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Optional, Sequence

from gan3d.errors import Gan3dError

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


class Parser(argparse.ArgumentParser):
    """argparse with the project's error contract: one line naming the command and what was wrong, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def at_least(low: float, kind=int):
    """An option's type with its allowed range (EDM2 spells it click.IntRange): values below `low` are refused."""
    def parse_value(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value >= low or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'} >= {low:g}, "
                                             f"got {text!r}")
        return value
    return parse_value


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
    parser = Parser(prog="gan3d", description="EpiGRAF-style 3D-aware GANs on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one run (embedded local Ray, or a cluster with --address)")
    _experiment_args(p)
    p.add_argument("--workers", type=at_least(1), help="Ray Train workers (default: run.workers)")
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
    p.add_argument("--iters", type=at_least(1), default=5, help="timed iterations after warm-up")
    p.add_argument("--warmup", type=at_least(0), default=1)
    p.add_argument("--mode", choices=["train", "generate", "invert"], default="train",
                   help="invert: inversion of renders of known latents (PSNR, novel views)")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--workers", type=at_least(1), default=1, help="also measure gloo scaling over N processes")
    p.add_argument("--plan", action="store_true", help="find the largest batch_gpu that fits memory")
    p.add_argument("--memory", action="store_true", help="bytes saved for backward per image, by module and phase "
                   "(and with PyTorch's own ops, for comparison)")
    p.add_argument("--batch", type=at_least(1), default=2, help="images for --memory (its numbers are per image)")
    p.add_argument("--compare", action="store_true", help="reference ops vs fast paths, alternated in one run")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = sub.add_parser("eval", help="metrics of a checkpoint (or a run's best checkpoint)")
    p.add_argument("path", help="a run directory or a checkpoint directory")
    p.add_argument("--metrics", default="fid50k_full", help="comma-separated: fid50k_full,kid50k_full,fid2k_full,swd")
    p.add_argument("--data", help="dataset to compare against (default: the one the run trained on)")
    p.add_argument("--mirror", action="store_true",
                   help="measure against the mirrored set too (not the paper's protocol, which is unflipped)")
    p.add_argument("--num-fakes", type=at_least(1), help="override the protocol's number of generated images")
    p.add_argument("--workers", type=at_least(1), default=1, help="generate on this many Ray workers")

    p = sub.add_parser("render", help="image grids, videos, interpolations, density slices and meshes")
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

    p = sub.add_parser("invert", help="photos -> latent, camera and (PTI) a tuned generator; novel views and meshes")
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
    q = dsub.add_parser("convert", help="zip/folder -> Parquet shards, or a zip")
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
    q = dsub.add_parser("render", help="3D assets -> a multi-view dataset, rendered with Blender over Ray")
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
    q.add_argument("--light", default="neutral", help="neutral (a white sky and one sun) | studio (a dimmer sky, a key "
                   "and a fill sun): fixed in the world")
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
    from gan3d.commands import COMMANDS

    args = parse(argv)
    try:
        if args.command in NOT_YET:
            print(f"gan3d {args.command}: not yet: {NOT_YET[args.command]}", file=sys.stderr)
            return 2
        return COMMANDS[args.command](args)
    except Gan3dError as e:
        print(f"gan3d: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full or read-only filesystem under something gan3d writes: one line, no traceback
        from gan3d.errors import no_space

        full = no_space(e)
        if full is None:
            raise
        print(f"gan3d: error: {full.filename or 'a file'}: {full.strerror or full}; free space there or write "
              f"elsewhere", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gan3d: aborted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
