"""metrics.parquet: one row per tick, written atomically, so reports and sweeps never need a W&B server."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

FILE = "metrics.parquet"


class MetricsStore:
    FILE = FILE

    def __init__(self, run_dir: str | Path, resume_kimg: Optional[float] = None):
        self.path = Path(run_dir) / FILE
        self.rows: list[dict] = []
        if self.path.is_file():
            self.rows = pq.read_table(self.path).to_pylist()
            if resume_kimg is not None:  # rows logged after the checkpoint we resume from are replayed
                self.rows = [r for r in self.rows if r.get("kimg", 0) <= resume_kimg + 1e-9]

    def append(self, row: dict) -> None:
        self.rows.append({k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                          for k, v in row.items()})
        self.flush()

    def flush(self) -> None:
        write_rows(self.rows, self.path)


def write_rows(rows: list[dict], path: Path) -> None:
    """Rows (keys may differ between rows: the union, in first-seen order) as a Parquet table, atomically:
    readers see the old file or the new one, never half of one."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    table = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows])
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_metrics(run_dir: str | Path):
    """metrics.parquet of a run as a pandas DataFrame."""
    return pq.read_table(Path(run_dir) / FILE).to_pandas()
