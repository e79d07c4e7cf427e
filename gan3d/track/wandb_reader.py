"""Read an offline W&B run file (run-*.wandb) back without a server: history rows, config, files.

wandb 0.31 ships no reader (no `wandb sync --view`, no datastore module), so this decodes the record
log itself: a 7-byte header (":W&B", magic 0xBEE1, version 0), then LevelDB-log framing in 32 KiB blocks
(crc32 4 bytes, length 2 bytes little-endian, type 1 byte: full/first/middle/last), each payload a
`wandb_internal_pb2.Record`.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterator

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> Iterator:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        block_left = BLOCK - pos % BLOCK
        if block_left < HEADER:  # block trailer padding
            pos += block_left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if length == 0 and kind == 0:
            pos += block_left
            continue
        payload = data[pos + HEADER: pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            pending = payload
        elif kind == FIRST:
            pending = payload
            continue
        elif kind == MIDDLE:
            pending += payload
            continue
        elif kind == LAST:
            pending += payload
        rec = pb.Record()
        rec.ParseFromString(pending)
        yield rec


def history(path: str | Path) -> list[dict]:
    """Every logged row (history record) as a dict of decoded JSON values."""
    rows = []
    for rec in records(path):
        if rec.WhichOneof("record_type") == "history":
            row = {}
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows


def find_run_file(run_dir: str | Path) -> Path:
    files = sorted(Path(run_dir).glob("**/offline-run-*/run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no offline W&B run file (wandb/offline-run-*/run-*.wandb)")
    return files[-1]


def run_info(path: str | Path) -> dict:
    """Name, group, tags and config of the run (from its first run record)."""
    for rec in records(path):
        if rec.WhichOneof("record_type") == "run":
            run = rec.run
            config = {item.key: json.loads(item.value_json) for item in run.config.update}
            return {"id": run.run_id, "name": run.display_name, "group": run.run_group, "tags": list(run.tags),
                    "config": config}
    raise ValueError(f"{path}: no run record")
