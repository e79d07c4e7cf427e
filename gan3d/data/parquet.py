"""Parquet shards of encoded images (pyarrow), local or on any pyarrow filesystem (s3://, gs://, file://).

Columns: image (encoded bytes), yaw, pitch, roll (float32, null without poses), label (int64, null
without labels), path (source name), and radius (float32: each camera's distance from its look-at point, null
unless the cameras have their own, as EG3D's; older shards lack the column). The schema metadata key b"gan3d"
holds JSON: resolution, num_images, has_poses, has_radius, has_labels, yaw_center and the preprocessing (source
resolution, resize filter, crop), since FID moves by a point with the resize filter alone.
"""
from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from PIL import Image
from tqdm import tqdm

from gan3d.data.archive import decode_image
from gan3d.data.order import epoch_order
from gan3d.data.poses import mirror_angles
from gan3d.config import uri_scheme
from gan3d.errors import DatasetError
from gan3d.storage import filesystem

COLUMNS = ("image", "yaw", "pitch", "roll", "label", "path")
SCHEMA = pa.schema([("image", pa.binary()), ("yaw", pa.float32()), ("pitch", pa.float32()), ("roll", pa.float32()),
                    ("label", pa.int64()), ("path", pa.string()), ("radius", pa.float32())])
RESIZE_FILTERS = {"lanczos": Image.LANCZOS, "bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "box": Image.BOX}


def is_parquet(path: str) -> bool:
    s = str(path)
    if uri_scheme(s):
        return not s.endswith(".zip")  # a zip at a URI is downloaded and read as a zip
    p = Path(s)
    return p.suffix == ".parquet" or (p.is_dir() and any(p.glob("*.parquet")))


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    return filesystem(path, DatasetError)


def list_shards(path: str) -> tuple[pafs.FileSystem, list[str]]:
    fs, root = _filesystem(path)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise DatasetError(f"{path}: Parquet dataset not found")
    if info.type == pafs.FileType.File:
        return fs, [root]
    files = sorted(f.path for f in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                   if f.type == pafs.FileType.File and f.path.endswith(".parquet"))
    if not files:
        raise DatasetError(f"{path}: no .parquet files in this directory")
    return fs, files


def read_metadata(fs: pafs.FileSystem, file: str) -> dict:
    schema = pq.read_schema(fs.open_input_file(file))
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise DatasetError(f"{file}: Parquet file lacks column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    raw = (schema.metadata or {}).get(b"gan3d")
    return json.loads(raw) if raw else {}


class ParquetDataset(torch.utils.data.IterableDataset):
    """Streams row groups: each epoch a seeded permutation of (file, row group) units split by rank,
    further split across DataLoader workers, rows shuffled within a unit."""

    def __init__(self, path: str, resolution: Optional[int] = None, mirror: bool = False, use_labels: bool = False,
                 need_poses: bool = False):
        self.path = str(path)
        fs, self.files = list_shards(self.path)
        self.meta = read_metadata(fs, self.files[0])
        for f in self.files[1:]:
            read_metadata(fs, f)  # column check on every shard
        self.units = [(f, g) for f in self.files for g in range(pq.ParquetFile(fs.open_input_file(f)).num_row_groups)]
        self.num_images = int(self.meta.get("num_images", 0))
        self.resolution = int(self.meta.get("resolution", 0))
        self.has_poses = bool(self.meta.get("has_poses", False))
        self.pose_columns = ("yaw", "pitch", "roll") + (("radius",) if self.meta.get("has_radius") else ())
        self.num_classes = int(self.meta.get("num_classes", 0))
        self.yaw_center = float(self.meta.get("yaw_center", np.pi / 2))
        if resolution is not None and self.resolution and resolution != self.resolution:
            raise DatasetError(f"{self.path}: shards hold {self.resolution}px images but dataset.resolution is "
                               f"{resolution}")
        if need_poses and not self.has_poses:
            raise DatasetError(f"{self.path}: camera poses are required but the shards have none (yaw/pitch/roll null)")
        if use_labels and not self.meta.get("has_labels", False):
            raise DatasetError(f"{self.path}: dataset.use_labels is set but the shards have no labels")
        self.mirror = mirror
        self.num_rows = sum(pq.ParquetFile(fs.open_input_file(f)).metadata.num_rows for f in self.files)
        self.rank, self.world, self.seed, self.start_epoch = 0, 1, 0, 0
        self._fs = None
        self._pool: Optional[tuple] = None

    def with_mirror(self, mirror: bool) -> "ParquetDataset":
        """The same shards with mirroring on or off (metrics measure the unflipped set)."""
        out = copy.copy(self)
        out.mirror, out._pool = mirror, None
        return out

    def __len__(self) -> int:
        """Rows in the shards (mirroring flips rows at random instead of doubling them)."""
        return self.num_rows

    def pose_pool(self) -> tuple[Optional[np.ndarray], np.ndarray]:
        """Every row's camera angles [N, 3] (None without poses) and class [N], mirrored copies appended when
        mirroring: what fakes draw their cameras and labels from (the pose and label columns only are read)."""
        if self._pool is None:
            fs, _ = _filesystem(self.path)
            cols = [pq.read_table(fs.open_input_file(f), columns=[*self.pose_columns, "label"]) for f in self.files]
            table = pa.concat_tables(cols)
            angles = np.stack([np.nan_to_num(table.column(k).to_numpy(zero_copy_only=False).astype(np.float32))
                               for k in self.pose_columns], 1)
            labels = np.nan_to_num(table.column("label").to_numpy(zero_copy_only=False).astype(np.float64)).astype(np.int64)
            if self.mirror:
                angles, labels = np.concatenate([angles, mirror_angles(angles, self.yaw_center)]), np.tile(labels, 2)
            self._pool = (angles if self.has_poses else None, labels)
        return self._pool

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fs"] = None  # filesystems are reopened in each process
        return state

    def set_shard(self, rank: int, world: int, seed: int, start_epoch: int = 0) -> None:
        self.rank, self.world, self.seed, self.start_epoch = rank, world, seed, start_epoch

    def _read_unit(self, file: str, group: int) -> pa.Table:
        if self._fs is None:
            self._fs, _ = _filesystem(self.path)
        return pq.ParquetFile(self._fs.open_input_file(file)).read_row_group(group, columns=[*COLUMNS, *self.pose_columns[3:]])

    def iter_epoch(self, epoch: int, worker: int = 0, num_workers: int = 1) -> Iterator[tuple]:
        units = epoch_order(len(self.units), epoch, self.seed, self.rank, self.world)[worker::num_workers]
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker])
        for u in units:
            file, group = self.units[u]
            table = self._read_unit(file, group)
            cols = {c: table.column(c).to_pylist() for c in table.column_names}
            for i in rng.permutation(table.num_rows):
                where = f"{file}:{cols['path'][i]}"
                img = decode_image(cols["image"][i], where)
                angles = np.array([cols[k][i] or 0.0 for k in self.pose_columns], np.float32)
                if self.mirror and rng.random() < 0.5:
                    img = np.ascontiguousarray(img[:, :, ::-1])
                    angles = mirror_angles(angles, self.yaw_center)
                yield torch.from_numpy(img), torch.from_numpy(angles), int(cols["label"][i] or 0)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        epoch = self.start_epoch
        while True:
            yield from self.iter_epoch(epoch, worker, num_workers)
            epoch += 1


def encode_png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.transpose(1, 2, 0)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_shards(rows: Iterator[dict], dst: str, shard_size: int, meta: dict, total: Optional[int] = None,
                 row_group_size: int = 256) -> int:
    """Write dict rows (COLUMNS) into part-NNNNN.parquet files of `shard_size` rows; returns the count."""
    fs, root = _filesystem(dst)
    fs.create_dir(root, recursive=True)
    schema = SCHEMA.with_metadata({b"gan3d": json.dumps(meta).encode()})
    buf: list[dict] = []
    count, part = 0, 0

    def flush():
        nonlocal part, buf
        if not buf:
            return
        table = pa.Table.from_pylist(buf, schema=schema)
        tmp, final = f"{root}/.part-{part:05d}.parquet.tmp", f"{root}/part-{part:05d}.parquet"
        with fs.open_output_stream(tmp) as f:  # atomic: a crash never leaves a half-written shard
            pq.write_table(table, f, row_group_size=row_group_size)
        fs.move(tmp, final)
        part, buf = part + 1, []

    for row in tqdm(rows, total=total, desc=f"writing {dst}", unit="img", disable=None):
        buf.append(row)
        count += 1
        if len(buf) >= shard_size:
            flush()
    flush()
    return count
