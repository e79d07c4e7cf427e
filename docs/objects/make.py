"""The objects64 example, end to end, from public research meshes: what docs/OBJECTS.md shows was made by it.

    python docs/objects/make.py assets WORK           # the meshes, as two class folders
    python docs/objects/make.py render WORK [--light neutral|studio]
    python docs/objects/make.py train WORK [--light ...] [overrides ...]
    python docs/objects/make.py compare WORK          # the lights at equal kimg: silhouettes, whatever the light
    python docs/objects/make.py shapes WORK RUN ...   # runs' latest checkpoints by their silhouettes
    python docs/objects/make.py pictures WORK [--light ...]

Needs Blender's Python module (pip install -e '.[render]') for `assets` and `render`. The meshes are the sample
meshes that ship inside the pymeshlab wheel (the Stanford bunny, Keenan Crane's cow, an airplane, a bone), taken
out of the wheel without installing it, plus Blender's Suzanne (written as PLY) and a torus (written as STL), so
that every import path of the render is used. Classes are the first folder level: creatures/ and objects/.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MESHES = {"creatures": {"bunny.obj": "bunny.obj", "cow.obj": "cow.obj"},
          "objects": {"airplane.obj": "airplane.obj", "bone.ply": "bone.ply"}}


def gan3d(*args: str) -> None:
    rc = subprocess.run([sys.executable, "-m", "gan3d.cli", *args]).returncode
    if rc:
        raise SystemExit(rc)  # gan3d has said why in one line


def assets(work: Path) -> Path:
    out = work / "assets"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "pymeshlab==2025.7.post1", "--no-deps", "-d", tmp,
                        "-q"], check=True)
        wheel = next(Path(tmp).glob("pymeshlab-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for cls, files in MESHES.items():
                for src, dst in files.items():
                    name = next(n for n in z.namelist() if n.endswith(f"tests/sample_meshes/{src}"))
                    (out / cls).mkdir(parents=True, exist_ok=True)
                    (out / cls / dst).write_bytes(z.read(name))
    import bpy  # Blender's own primitives, through the PLY and STL exporters

    for cls, name, add, export in (("creatures", "suzanne.ply", bpy.ops.mesh.primitive_monkey_add, bpy.ops.wm.ply_export),
                                   ("objects", "torus.stl", bpy.ops.mesh.primitive_torus_add, bpy.ops.wm.stl_export)):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        add()
        export(filepath=str(out / cls / name))
    return out


def dataset(work: Path, light: str) -> Path:
    return work / f"objects_{light}.zip"


def render(work: Path, light: str) -> None:
    gan3d("dataset", "render", str(work / "assets"), str(dataset(work, light)), "--views-per-asset", "128",
          "--resolution", "64", "--samples", "32", "--labels-from-folders", "--light", light)


def train(work: Path, light: str, overrides: list[str]) -> None:
    gan3d("train", str(HERE.parents[1] / "experiments" / "objects64.yaml"), f"dataset.path={dataset(work, light)}",
          f"run.out={work / 'runs'}", f"run.name=objects64_{light}", *overrides)


def pictures(work: Path, light: str) -> None:
    """A sample grid and an orbit per class, the SWD curve, into docs/objects/."""
    import pyarrow.parquet as pq
    from PIL import Image

    run = work / "runs" / f"objects64_{light}"
    for k, cls in enumerate(MESHES):
        out = work / "pictures" / cls
        gan3d("render", str(run), "--class", str(k), "--seeds", "0-7", "--vis", "video_grid", "--camera", "orbit",
              "--frames", "24", "--fps", "12", "--out", str(out))
        gan3d("render", str(run), "--class", str(k), "--seeds", "0-7", "--out", str(out))
        Image.open(out / "front_grid.png").save(HERE / f"samples_{cls}.png")
        frames = _frames(out / "video_grid.mp4")
        frames[0].save(HERE / f"orbit_{cls}.gif", save_all=True, append_images=frames[1:], duration=80, loop=0)
    _real_grids(dataset(work, light))
    rows = pq.read_table(run / "metrics.parquet").to_pylist()
    curve = [(r["kimg"], r["swd"]) for r in rows if r.get("swd") is not None]
    (HERE / f"swd_{light}.json").write_text(json.dumps(curve))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot(*zip(*curve), marker="o")
    ax.set_xlabel("kimg")
    ax.set_ylabel("SWD (x1e3, 512 fakes)")
    ax.set_title(f"objects64, {light} light")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(HERE / f"swd_{light}.png")


LIGHTS = ("neutral", "studio")


def silhouettes(images):
    """uint8 [N, 3, H, W] -> [N, 3, H, W] in [-1, 1]: -1 where the pixel is darker than the white background."""
    fg = images.min(dim=1, keepdim=True).values < 245
    return (1 - 2 * fg.float()).expand(-1, 3, -1, -1)


def contrast(reals) -> dict:
    """How much the light shows of an object: the luma spread inside its silhouette, its mean, and the fraction of
    the frame the silhouettes cover (object pixels as bright as the background are lost to it)."""
    rgb = reals.float()
    luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    fg = silhouettes(reals)[:, 0] < 0
    inside = [luma[i][fg[i]] for i in range(len(reals)) if fg[i].sum() >= 10]
    return {"luma_std_in_object": float(sum(v.std() for v in inside) / len(inside)),
            "luma_mean_in_object": float(sum(v.mean() for v in inside) / len(inside)),
            "coverage": float(fg.float().mean())}


def compare(work: Path, n: int = 512) -> None:
    """Shape learned, whatever the light: the SWD of the silhouettes of n fakes of each run's latest checkpoint
    against those of n reals of its own dataset, each set's contrast; beside it, each run's image SWD relative to
    its first measurement (image SWDs against two different datasets do not compare)."""
    import pyarrow.parquet as pq

    from gan3d.data.dataset import open_experiment_dataset
    from gan3d.metrics import conditioning, generate, real_images
    from gan3d.metrics.swd import swd
    from gan3d.training.checkpoint import list_checkpoints, load_generator, read_checkpoint

    out = {}
    for light in LIGHTS:
        run = work / "runs" / f"objects64_{light}"
        ckpt = list_checkpoints(run)[-1]
        cfg, kimg = read_checkpoint(ckpt).cfg, read_checkpoint(ckpt).counters.cur_nimg / 1000
        data = open_experiment_dataset(cfg, str(dataset(work, light)))
        reals = real_images(data, n, seed=0)
        fakes = generate(load_generator(ckpt), n, cfg, "cpu", seed=0, pool=conditioning(data))
        curve = [(r["kimg"], r["swd"]) for r in pq.read_table(run / "metrics.parquet").to_pylist()
                 if r.get("swd") is not None]
        out[light] = {"kimg": kimg, "silhouette_swd": swd(silhouettes(reals), silhouettes(fakes))["swd"],
                      "reals": contrast(reals), "fakes": contrast(fakes),
                      "swd_curve": curve, "swd_relative_to_first": [v / curve[0][1] for _, v in curve]}
        print(light, json.dumps(out[light]), flush=True)
    (HERE / "lights.json").write_text(json.dumps(out, indent=1))


def shapes(work: Path, runs: list[str], light: str, n: int = 512) -> None:
    """Shape learned, run against run on one dataset: for each run's latest checkpoint, the silhouette SWD of n
    fakes against n reals and the share of the frame the silhouettes cover."""
    from gan3d.data.dataset import open_experiment_dataset
    from gan3d.metrics import conditioning, generate, real_images
    from gan3d.metrics.swd import swd
    from gan3d.training.checkpoint import list_checkpoints, load_generator, read_checkpoint

    out = {}
    for name in runs:
        ckpt = list_checkpoints(work / "runs" / name)[-1]
        cfg, kimg = read_checkpoint(ckpt).cfg, read_checkpoint(ckpt).counters.cur_nimg / 1000
        data = open_experiment_dataset(cfg, str(dataset(work, light)))
        reals = real_images(data, n, seed=0)
        fakes = generate(load_generator(ckpt), n, cfg, "cpu", seed=0, pool=conditioning(data))
        out[name] = {"kimg": kimg, "silhouette_swd": swd(silhouettes(reals), silhouettes(fakes))["swd"],
                     "coverage": {"reals": contrast(reals)["coverage"], "fakes": contrast(fakes)["coverage"]}}
        print(name, json.dumps(out[name]), flush=True)
    (HERE / "shapes.json").write_text(json.dumps(out, indent=1))


def _real_grids(path: Path, per_class: int = 8) -> None:
    """What the model sees: views spread evenly over each class's images (so over all of its assets), as grids
    beside the samples."""
    import torch

    from gan3d.data import open_dataset
    from gan3d.track import media

    data = open_dataset(str(path), 64, False, True, True, 0)
    for k, cls in enumerate(MESHES):
        mine = [i for i in range(len(data)) if int(data[i][2]) == k]
        picked = [data[mine[j * len(mine) // per_class]][0] for j in range(per_class)]
        media.save_png(media.image_grid(torch.stack(picked)), HERE / f"reals_{cls}.png")


def _frames(video: Path) -> list:
    import imageio.v2 as imageio
    from PIL import Image

    return [Image.fromarray(f) for f in imageio.mimread(video)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("assets", "render", "train", "compare", "shapes", "pictures"))
    p.add_argument("work", type=Path)
    p.add_argument("--light", default="studio", choices=LIGHTS)
    p.add_argument("overrides", nargs="*")
    a = p.parse_intermixed_args()
    a.work.mkdir(parents=True, exist_ok=True)
    {"assets": lambda: assets(a.work), "render": lambda: render(a.work, a.light),
     "train": lambda: train(a.work, a.light, a.overrides), "compare": lambda: compare(a.work),
     "shapes": lambda: shapes(a.work, a.overrides, a.light),
     "pictures": lambda: pictures(a.work, a.light)}[a.step]()


if __name__ == "__main__":
    main()
