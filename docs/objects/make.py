"""The objects64 example, end to end, from public research meshes: what docs/OBJECTS.md shows was made by it.

    python docs/objects/make.py assets WORK           # the meshes, as two class folders
    python docs/objects/make.py render WORK [--light neutral|studio]
    python docs/objects/make.py train WORK [--light ...] [overrides ...]
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
    subprocess.run([sys.executable, "-m", "gan3d.cli", *args], check=True)


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
    rows = pq.read_table(run / "metrics.parquet").to_pylist()
    curve = [(r["kimg"], r["swd"]) for r in rows if r.get("swd") is not None]
    (HERE / f"swd_{light}.json").write_text(json.dumps(curve))


def _frames(video: Path) -> list:
    import imageio.v2 as imageio
    from PIL import Image

    return [Image.fromarray(f) for f in imageio.mimread(video)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("assets", "render", "train", "pictures"))
    p.add_argument("work", type=Path)
    p.add_argument("--light", default="neutral")
    p.add_argument("overrides", nargs="*")
    a = p.parse_intermixed_args()
    a.work.mkdir(parents=True, exist_ok=True)
    {"assets": lambda: assets(a.work), "render": lambda: render(a.work, a.light),
     "train": lambda: train(a.work, a.light, a.overrides), "pictures": lambda: pictures(a.work, a.light)}[a.step]()


if __name__ == "__main__":
    main()
