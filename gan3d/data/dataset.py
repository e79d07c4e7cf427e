"""Datasets the training loop reads: zip / folder archives (map-style) and Parquet shards (streaming),
each worker reading a disjoint shard by rank, reshuffled every epoch with the run seed.

Items are (image uint8 [3, H, W], camera angles float32 [3], label int64). Mirroring doubles the set
with x-flipped images whose yaw is reflected about the dataset's centre yaw (and roll negated).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from gan3d.data.archive import Archive, check_references, decode_image, image_header, parse_metadata
from gan3d.data.order import epoch_order
from gan3d.data.poses import mirror_angles, yaw_center_of
from gan3d.errors import DatasetError


class ImageDataset(torch.utils.data.Dataset):
    """A zip or folder of square images of one size, with optional dataset.json poses and labels."""

    def __init__(self, path: str | Path, resolution: Optional[int] = None, mirror: bool = False,
                 use_labels: bool = False, need_poses: bool = False, max_size: int = 0):
        self.archive = Archive(path)
        names = self.archive.image_names()
        if not names:
            raise DatasetError(f"{self.archive.path}: no images found (expected PNG/JPEG/WebP files, any nesting)")
        others = self.archive.other_names()
        if others:
            raise DatasetError(f"{self.archive.describe(others[0])}: not an image; the dataset holds only "
                               f"PNG/JPEG/WebP files and dataset.json ({len(others)} other file(s))")
        if max_size:
            names = names[:max_size]
        self.names = names
        with self.archive.open(names[0]) as f:
            self.resolution, _, _ = image_header(f, self.archive.describe(names[0]))
        for n in names:  # headers only: cheap even for large sets; decoding errors surface per item
            with self.archive.open(n) as f:
                wi, hi, _ = image_header(f, self.archive.describe(n))
            if wi != hi:
                raise DatasetError(f"{self.archive.describe(n)}: image is {wi}x{hi}; images must be square")
            if wi != self.resolution:
                raise DatasetError(f"{self.archive.describe(n)}: image is {wi}x{hi} but {names[0]} is "
                                   f"{self.resolution}x{self.resolution}; all images must have one size")
        if resolution is not None and resolution != self.resolution:
            raise DatasetError(f"{self.archive.path}: images are {self.resolution}x{self.resolution} but "
                               f"dataset.resolution is {resolution}; resize with `gan3d dataset convert "
                               f"{self.archive.path} OUT_{resolution}.zip --resolution {resolution}` (a zip, or "
                               f"Parquet shards for an OUT without .zip) or set dataset.resolution={self.resolution}")
        meta = parse_metadata(self.archive)
        check_references(self.archive, meta, names, need_poses)
        self.meta = meta
        width = len(next(iter(meta.angles.values()))) if meta.angles else 3  # 4: each camera's own radius
        self.angles = (np.array([meta.angles.get(n, [0.0] * width) for n in names], dtype=np.float32)
                       if meta.angles else None)
        self.labels = np.array([meta.labels.get(n, 0) for n in names], dtype=np.int64)
        if use_labels and not meta.labels:
            raise DatasetError(f"{self.archive.path}: dataset.use_labels is set but dataset.json has no 'labels'")
        self.mirror = mirror
        self.yaw_center = float(meta.extra.get("yaw_center", yaw_center_of(self.angles)))

    @property
    def has_poses(self) -> bool:
        return self.angles is not None

    def with_mirror(self, mirror: bool) -> "ImageDataset":
        """The same images with mirroring on or off (metrics measure the unflipped set)."""
        out = copy.copy(self)
        out.mirror = mirror
        return out

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self) -> int:
        return len(self.names) * (2 if self.mirror else 1)

    def __getitem__(self, idx: int):
        i, flip = idx % len(self.names), idx >= len(self.names)
        name = self.names[i]
        img = decode_image(self.archive.read(name), self.archive.describe(name))
        if img.shape[1:] != (self.resolution, self.resolution):
            raise DatasetError(f"{self.archive.describe(name)}: decoded size {img.shape[1:]} differs from the header")
        angles = self.angles[i] if self.angles is not None else np.zeros(3, np.float32)  # [3] or [4]
        if flip:
            img = np.ascontiguousarray(img[:, :, ::-1])
            angles = mirror_angles(angles, self.yaw_center)
        return torch.from_numpy(img), torch.from_numpy(np.asarray(angles, np.float32)), int(self.labels[i])

    def all_angles(self) -> Optional[np.ndarray]:
        if self.angles is None:
            return None
        return np.concatenate([self.angles, mirror_angles(self.angles, self.yaw_center)]) if self.mirror else self.angles

    def pose_pool(self) -> tuple[Optional[np.ndarray], np.ndarray]:
        """Every entry's camera angles [N, 3] (None without poses) and class [N], mirrored entries included, in
        index order: what fakes draw their cameras and labels from."""
        return self.all_angles(), np.concatenate([self.labels, self.labels]) if self.mirror else self.labels


class ShardedSampler(torch.utils.data.Sampler):
    """Infinite index stream for one rank: every epoch a new seeded permutation, this rank's slice of it."""

    def __init__(self, num_items: int, rank: int, world: int, seed: int, start_epoch: int = 0):
        self.num_items, self.rank, self.world, self.seed, self.epoch = num_items, rank, world, seed, start_epoch

    def __iter__(self) -> Iterator[int]:
        while True:
            yield from epoch_order(self.num_items, self.epoch, self.seed, self.rank, self.world).tolist()
            self.epoch += 1


def open_dataset(path: str, resolution: Optional[int] = None, mirror: bool = False, use_labels: bool = False,
                 need_poses: bool = False, max_size: int = 0):
    """A zip / folder -> ImageDataset; a Parquet dir or URI -> ParquetDataset."""
    from gan3d.data.parquet import ParquetDataset, is_parquet
    from gan3d.storage import is_uri, local_copy

    if is_parquet(path):
        return ParquetDataset(path, resolution=resolution, mirror=mirror, use_labels=use_labels,
                              need_poses=need_poses)
    if is_uri(str(path)):  # a zip in an object store: one download per node, into the cache
        path = str(local_copy(str(path)))
    return ImageDataset(path, resolution, mirror, use_labels, need_poses, max_size)


def needs_poses(cfg) -> bool:
    """Whether an experiment reads the dataset's camera poses: fakes drawn from them, or a camera-conditioned
    G or D."""
    return (cfg.dataset.camera.dist == "dataset" or cfg.model.generator.camera_cond
            or cfg.model.discriminator.camera_cond)


def open_experiment_dataset(cfg, path: str):
    """The dataset at `path` as experiment `cfg` trains on it (its resolution, mirroring, labels, poses, size)."""
    d = cfg.dataset
    return open_dataset(str(path), d.resolution, d.mirror, d.use_labels, needs_poses(cfg), d.max_size)


def real_batches(dataset, batch: int, rank: int, world: int, seed: int, num_workers: int = 1,
                 start_epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Endless (images uint8 [B, 3, H, W], angles [B, 3], labels [B]) batches of this rank's shard."""
    if isinstance(dataset, torch.utils.data.IterableDataset):
        dataset.set_shard(rank, world, seed, start_epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=num_workers,
                                             persistent_workers=num_workers > 0)
    else:
        sampler = ShardedSampler(len(dataset), rank, world, seed, start_epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=num_workers,
                                             persistent_workers=num_workers > 0, drop_last=True)
    while True:
        yield from loader


def dataset_classes(ds) -> int:
    """How many classes a dataset's labels name (0 when it has none)."""
    if hasattr(ds, "meta") and isinstance(ds.meta, dict):  # Parquet shards carry the count in their metadata
        return int(ds.meta.get("num_classes", 0)) if ds.meta.get("has_labels") else 0
    return int(ds.labels.max()) + 1 if ds.meta.labels else 0


def resolve_labels(cfg, ds, where: str):
    """The experiment with its class count settled against the dataset at `where`, and the header's notes:
    dataset.use_labels with c_dim 0 takes the dataset's count; a c_dim smaller than the labels need is refused;
    labels (or a c_dim) that an unconditional run leaves unused are said, never silently dropped."""
    from gan3d import config as config_mod
    from gan3d.errors import ConfigError

    d, found = cfg.dataset, dataset_classes(ds)
    if not d.use_labels:
        notes = []
        if found:
            notes.append(f"{where} has labels ({found} classes), unused: dataset.use_labels is false, so the model is "
                         f"unconditional (dataset.use_labels=true conditions it on them)")
        elif d.c_dim:
            notes.append(f"dataset.c_dim={d.c_dim} is unused: dataset.use_labels is false, so the model is "
                         f"unconditional")
        return cfg, notes
    if d.c_dim and d.c_dim < found:
        raise ConfigError(f"key 'dataset.c_dim' = {d.c_dim} is not allowed: {where} has labels 0-{found - 1} "
                          f"(expected >= {found}, or 0 for the dataset's own count)")
    if d.c_dim:
        return cfg, [f"labels: {d.c_dim} classes (a conditional model; the dataset uses {found})"]
    return (config_mod.set_values(cfg, {"dataset.c_dim": found}),
            [f"labels: {found} classes, from the dataset (a conditional model)"])
