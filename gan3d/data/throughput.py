"""How fast a dataset feeds training: images per second through the same DataLoader the loop uses."""
from __future__ import annotations

import time

from gan3d.data.dataset import open_dataset, real_batches


def loader_throughput(path: str, batch: int = 64, num_workers: int = 2, num_images: int = 4000,
                      warmup_batches: int = 4) -> float:
    """img/s of uint8 batches (decode + collate) after a warm-up; reads past epoch ends."""
    ds = open_dataset(path)
    it = real_batches(ds, batch, rank=0, world=1, seed=0, num_workers=num_workers)
    for _ in range(warmup_batches):
        next(it)
    n, t0 = 0, time.perf_counter()
    while n < num_images:
        n += len(next(it)[0])
    return n / (time.perf_counter() - t0)
