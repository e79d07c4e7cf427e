"""`gan3d dataset render`: every asset under a folder rendered with Blender, one Ray task per asset spread over
the cluster's CPUs, then one gan3d dataset. Resumable (a rerun renders only assets without a done.json); a
failing asset is retried, then named in the summary without stopping the rest."""
from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path
from typing import Optional

from gan3d.data.blender import ASSET_EXTS, DONE, RenderSettings, asset_id, list_assets, render_asset, skipped_files
from gan3d.data.rendered import assemble, finished
from gan3d.errors import Gan3dError
from gan3d.storage import cache_root, is_uri


def parts_dir(dst: str) -> Path:
    """Where the per-asset renders live until assembled: beside a local dataset, in the cache for a URI."""
    if is_uri(dst):
        return cache_root() / "render" / hashlib.sha256(dst.encode()).hexdigest()[:16]
    p = Path(dst)
    return p.parent / f".{p.name}.parts"


def render_dataset(assets: str, dst: str, settings: RenderSettings, workers: Optional[int] = None,
                   labels_from_folders: bool = False, fmt: str = "zip", address: Optional[str] = None,
                   retries: int = 2, show_progress: bool = True) -> dict:
    """Render what is missing, then assemble the dataset at `dst`; returns a summary (failed assets by name)."""
    import ray
    from tqdm import tqdm

    from gan3d.orchestrate.runtime import ensure_ray

    rels = list_assets(assets)
    skipped = skipped_files(assets)
    if skipped:
        print(f"gan3d: skipped {len(skipped)} file(s) that are not assets gan3d renders ({', '.join(ASSET_EXTS)}): "
              f"{', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''}", flush=True)
    parts = parts_dir(dst)
    parts.mkdir(parents=True, exist_ok=True)
    todo = [r for r in rels if not finished(parts, r)]
    print(f"gan3d: {len(rels)} asset(s) under {assets}: {len(rels) - len(todo)} already rendered, {len(todo)} to "
          f"render ({settings.views} views at {settings.resolution} px, {settings.engine} {settings.samples} samples)",
          flush=True)
    failed: dict[str, str] = {}
    if todo:
        ensure_ray(address)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        concurrency = max(1, min(workers or cpus, len(todo)))
        per_task = max(1, cpus // concurrency)  # Cycles' threads per render
        task = ray.remote(num_cpus=per_task, max_retries=retries, retry_exceptions=True)(render_asset)
        queue, in_flight = list(todo), {}
        bar = tqdm(total=len(todo) * settings.views, unit="img", disable=not show_progress)
        while queue or in_flight:
            while queue and len(in_flight) < concurrency:
                rel = queue.pop(0)
                in_flight[task.remote(str(assets), rel, str(parts), settings, per_task)] = rel
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            rel = in_flight.pop(ready[0])
            try:
                bar.update(len(ray.get(ready[0])["views"]))
            except Exception as e:  # noqa: BLE001 - after its retries: named below, the rest go on
                cause = getattr(e, "cause", None) or e
                failed[rel] = f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1][:200]}"
        bar.close()
    for rel, why in failed.items():
        print(f"gan3d: failed after {retries + 1} attempts: {rel}: {why}", flush=True)
    records = [json.loads((parts / asset_id(r) / DONE).read_text()) for r in rels if finished(parts, r)]
    if not records:
        raise Gan3dError(f"{assets}: no asset could be rendered (see {parts / 'blender.log'})")
    meta = assemble(parts, records, dst, settings, labels_from_folders, fmt)
    seconds = [r["seconds"] / len(r["views"]) for r in records]
    return {"assets": len(records), "images": len(meta["camera_angles"]), "failed": failed, "out": dst,
            "classes": meta["render"]["classes"], "sec_per_image": statistics.median(seconds)}
