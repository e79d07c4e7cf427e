"""`gan3d invert` on files: images and cameras in, one folder of outputs per image (latent, camera,
reconstruction, orbit video, mesh, metrics, and for PTI a gan3d checkpoint of the tuned generator), in this
process or spread over Ray workers. The fitting itself is gan3d.tools.inversion."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from gan3d.errors import ConfigError
from gan3d.tools.inversion import (RESIZE_FILTER, InvertSettings, Inversion, noise_layers, camera_report, invert,
                             load_image)


class PoseTable:
    """The camera_angles of a gan3d dataset.json, found for an image by its path inside the dataset (the folder
    holding dataset.json): a rendered set has a 0002.png in every asset's folder, so a bare file name is used only
    when exactly one entry has it."""

    def __init__(self, path: str | Path):
        from gan3d.data.archive import angle_problems

        self.path, self.root = Path(path), Path(path).resolve().parent
        try:
            angles = json.loads(self.path.read_text())["camera_angles"]
            assert isinstance(angles, dict)
        except (OSError, ValueError, KeyError, TypeError, AssertionError):
            raise ConfigError(f"--poses {path}: expected a dataset.json with 'camera_angles' "
                              "{image: [yaw, pitch, roll]}") from None
        for name, a in angles.items():
            if (msg := angle_problems(name, a)) is not None:
                raise ConfigError(f"--poses {path}: {msg}")
        self.angles = {Path(name).as_posix(): [float(v) for v in a] for name, a in angles.items()}

    def find(self, image: str | Path) -> list[float]:
        """[yaw, pitch, roll] of `image`: by its path relative to the dataset's folder, else by the entry its path
        ends with (the dataset unpacked elsewhere), else by a file name no other entry shares."""
        image = Path(image)
        full = image.resolve()
        if full.is_relative_to(self.root) and (rel := full.relative_to(self.root).as_posix()) in self.angles:
            return self.angles[rel][:3]
        tail = [n for n in self.angles if full.as_posix().endswith("/" + n)]
        if tail:
            return self.angles[max(tail, key=len)][:3]
        same = [n for n in self.angles if Path(n).name == image.name]
        if len(same) == 1:
            return self.angles[same[0]][:3]
        if same:
            raise ConfigError(f"--poses {self.path}: {image}: {len(same)} entries are named {image.name} "
                              f"({', '.join(same[:3])}{', ...' if len(same) > 3 else ''}) and its path names none of "
                              f"them; give the image by its path inside {self.root}")
        raise ConfigError(f"--poses {self.path}: no camera for {image} (camera_angles names the images by their "
                          f"path inside {self.root})")


def write_outputs(inv: Inversion, out: Path, source: Optional[Path], settings: InvertSettings, info: dict,
                  frames: int = 48, mesh_resolution: int = 128) -> list[Path]:
    """Everything one inversion leaves in `out`: latent.npz, camera.json, target/reconstruction PNGs, an orbit
    video around its camera, a PLY mesh of its density, metrics.json, and for PTI a gan3d checkpoint of the
    tuned generator (G_pti/), which `gan3d render`, `eval` and `invert` open like any checkpoint."""
    import json

    from gan3d.render.views import ellipse
    from gan3d.track import media
    from gan3d.metrics import to_uint8
    from gan3d.tools.visualize import density_grid, surface, write_ply, write_video

    out.mkdir(parents=True, exist_ok=True)
    G = inv.G
    noise = {f"noise/{i}": m.noise_const.numpy() for i, m in enumerate(noise_layers(G))}
    np.savez(out / "latent.npz", ws=inv.ws[0].numpy(), angles=inv.angles[0].numpy(), mode=settings.mode, **noise)
    report, _ = camera_report(G, inv.angles[0])
    (out / "camera.json").write_text(json.dumps({**report, "fitted": settings.fit_camera,
                                                 "fov_fitted": settings.fit_fov}, indent=1))
    files = [out / "latent.npz", out / "camera.json",
             media.save_png(media.image_grid(to_uint8(inv.target).cpu()), out / "target.png"),
             media.save_png(media.image_grid(to_uint8(inv.reconstruction).cpu()), out / "reconstruction.png")]
    yaw, pitch = float(inv.angles[0, 0]), float(inv.angles[0, 1])
    path = ellipse(frames, yaw, pitch, 0.35, 0.12)
    with torch.no_grad():
        planes = G.synthesis(inv.ws, "const")
        video = torch.cat([to_uint8(G.render_planes(planes, inv.ws, a[None], inv.target.shape[-1])["image"]).cpu()
                           for a in path])
        cube = 2 * G.cfg.render.cube_scale
        sigma = density_grid(G, None, mesh_resolution, cube, ws=inv.ws)
    files.append(write_video(video, out / "orbit", fps=24))
    verts, faces = surface(sigma, cube, float(np.percentile(sigma, 90)))
    write_ply(out / "mesh.ply", verts, faces)
    files.append(out / "mesh.ply")
    if settings.mode == "pti" and source is not None:
        files.append(_write_tuned(G, source, out / "G_pti"))
    metrics = {**inv.metrics, "mode": settings.mode, "steps": settings.steps,
               "pti_steps": settings.pti_steps if settings.mode == "pti" else 0, "resize_filter": RESIZE_FILTER,
               "settings": dataclasses.asdict(settings), **info}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return files + [out / "metrics.json"]


def _write_tuned(G, source: Path, dest: Path) -> Path:
    """The tuned G as a gan3d checkpoint: the source checkpoint's config, D and counters, G and G_ema tuned."""
    from gan3d.nn import build_discriminator
    from gan3d.training.checkpoint import load_modules, read_checkpoint, write_checkpoint

    ck = read_checkpoint(source)
    modules = {"G": G, "G_ema": G}
    if "model/D" in ck.state:
        D = build_discriminator(ck.cfg)
        load_modules(ck, {"D": D})
        modules["D"] = D
    return write_checkpoint(dest, ck.cfg, modules, {}, ck.counters, {}, ck.metrics, ck.cfg.dataset.path,
                            extra_meta={"inverted_from": str(source)})


def invert_files(checkpoint: str | Path, images: Sequence[str | Path], out: str | Path,
                 settings: InvertSettings = InvertSettings(), camera: Optional[Sequence[float]] = None,
                 poses: Optional[str] = None, crop: Optional[Sequence[int]] = None, resolution: int = 0,
                 show_progress: bool = True, folders: Optional[dict[str, str]] = None) -> list[dict]:
    """`gan3d invert` for a list of image files, in this process: one folder per image under `out`
    (named after the file, with its parent folders where names repeat), one metrics dict per image."""
    from tqdm import tqdm

    from gan3d.render.views import TrainedViews
    from gan3d.training.checkpoint import best_checkpoint, load_generator

    ckpt, _ = best_checkpoint(checkpoint)
    G = load_generator(ckpt)
    G.check_class(settings.class_index)
    res = resolution or G.img_resolution
    table = PoseTable(poses) if poses else None
    found = {str(Path(p)): table.find(p) for p in images} if table is not None else {}  # every camera before any work
    results, folders = [], folders or output_folders(images)
    for path in map(Path, images):
        img = load_image(path, res, crop)
        if camera is not None:
            angles = torch.tensor([*camera, 0.0][:3], dtype=torch.float32)
        elif table is not None:
            angles = torch.tensor(found[str(path)])
        else:  # the centre of the views G trained on, refined
            angles = torch.tensor([*TrainedViews.of(G).centre(), 0.0])
        fit = settings.fit_camera or (camera is None and table is None)
        s = dataclasses.replace(settings, fit_camera=fit)
        _, warn = camera_report(G, angles)
        if warn:
            print(f"gan3d WARNING: {path.name}: {warn}", flush=True)
        total = s.steps + (s.pti_steps if s.mode == "pti" else 0)
        bar = tqdm(total=total, desc=path.name, unit="step", disable=not show_progress, leave=False)
        inv = invert(G, img, angles, s, lambda phase, i, v: (bar.update(1), bar.set_postfix(loss=f"{v:.4f}", phase=phase)))[0]
        bar.close()
        dest = Path(out) / folders[str(path)]
        write_outputs(inv, dest, Path(ckpt), s, {"image": str(path), "checkpoint": str(ckpt), "resolution": res,
                                                  "crop": list(crop) if crop else None})
        row = {"image": str(path), "out": str(dest), **{k: v for k, v in inv.metrics.items() if k != "settings"}}
        print(f"gan3d: {path.name}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f} ({s.mode}) -> {dest}", flush=True)
        results.append(row)
    return results


def output_folders(images: Sequence[str | Path]) -> dict[str, str]:
    """Each image's output folder name: its file stem, with as many parent folders as make it unique
    ('cow_0002' and 'woody_0002' for two 0002.png)."""
    paths = [Path(p) for p in images]
    depth = {str(p): 1 for p in paths}

    def name(p: Path) -> str:
        return "_".join([*p.parent.parts[len(p.parent.parts) - depth[str(p)] + 1:], p.stem])
    for _ in range(max((len(p.parts) for p in paths), default=1)):
        seen: dict[str, list[Path]] = {}
        for p in paths:
            seen.setdefault(name(p), []).append(p)
        clashes = [p for group in seen.values() if len(group) > 1 for p in group]
        if not clashes:
            break
        for p in clashes:
            depth[str(p)] = min(depth[str(p)] + 1, len(p.parts))
    return {str(p): name(p) for p in paths}


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def expand_images(items: Sequence[str | Path]) -> list[Path]:
    """Image files as given, and every image directly inside a given folder (sorted)."""
    out: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ConfigError(f"{item}: a folder with no images ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        else:
            out.append(item)
    return out


def invert_on_ray(checkpoint: str, images: Sequence[str], out: str, workers: int, **kwargs) -> list[dict]:
    """invert_files over `workers` Ray tasks (Ray must be initialised: the CLI starts or joins it), images split
    evenly; each task loads the checkpoint itself. Results in the order of `images`."""
    import ray

    @ray.remote(num_cpus=1)
    def chunk(paths: list[str]) -> list[dict]:
        return invert_files(checkpoint, paths, out, show_progress=False, folders=folders, **kwargs)

    folders = output_folders(images)  # unique across all workers' images
    parts = [list(images[i::workers]) for i in range(workers) if images[i::workers]]
    rows = {r["image"]: r for rows in ray.get([chunk.remote(p) for p in parts]) for r in rows}
    return [rows[str(Path(p))] for p in images]
