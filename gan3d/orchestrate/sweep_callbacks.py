"""What a sweep's driver keeps while Tune runs: trials.parquet (one row per trial) and the console (a line per
trial event, a compact table every 30 s). Both are Tune callbacks, pickled with the sweep's state."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pyarrow.parquet as pq
from ray import tune

from gan3d.storage import RunMirror, join, upload
from gan3d.track.store import write_rows

TRIALS = "trials.parquet"


class TrialsTable(tune.Callback):
    """Keeps trials.parquet: one row per trial with its hyperparameters, status and metrics."""

    def __init__(self, path: str, metric: str, mode: str, uri: Optional[str] = None):
        self.path, self.metric, self.mode, self.uri = Path(path), metric, mode, uri  # uri: the sweep at a store
        self.rows: dict[str, dict] = {}
        self._loaded = False

    def _load(self) -> None:
        """Merge the table on disk once: after Tuner.restore this callback comes back as it was pickled
        when the sweep started, and finished trials report nothing again."""
        if not self._loaded and self.uri:
            RunMirror(self.path.parent, self.uri).pull([TRIALS])  # the store's table, not a stale local copy
        if not self._loaded and self.path.is_file():
            for r in pq.read_table(self.path).to_pylist():
                self.rows.setdefault(r["trial_id"], r)
        self._loaded = True

    def _update(self, trial, result: Optional[dict] = None, status: Optional[str] = None) -> None:
        self._load()
        row = self.rows.setdefault(trial.trial_id, {"trial_id": trial.trial_id})
        row.update({f"config/{k}": v for k, v in trial.config.items()})
        row["status"] = status or trial.status
        if result:
            for k in ("kimg", "run_name"):
                if k in result:
                    row[k] = result[k]
            for k in (self.metric, "loss_G", "loss_D_real", "loss_D_fake"):
                if k in result:
                    row[f"last/{k}"] = result[k]
            v = result.get(self.metric)
            if v is not None:
                best = row.get(f"best/{self.metric}")
                row[f"best/{self.metric}"] = v if best is None or (v < best if self.mode == "min" else v > best) else best
        self._flush()

    def _flush(self) -> None:
        write_rows(list(self.rows.values()), self.path)
        if self.uri:
            upload(self.path, join(self.uri, TRIALS))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._update(trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._update(trial, status="TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._update(trial, status="ERROR")



class SweepConsole(tune.Callback):
    """The sweep's console: a line when a trial starts, a compact table of the trials every `every_s` seconds,
    one line per finished, stopped or failed trial. (Tune's own tables and the trials' tick lines stay off.)"""

    def __init__(self, metric: str, mode: str, target_kimg: float, every_s: float = 30.0):
        self.metric, self.mode, self.target, self.every_s = metric, mode, target_kimg, every_s
        self.last: dict[str, dict] = {}
        self._printed = 0.0

    def _params(self, trial) -> str:
        return " ".join(f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                        for k, v in sorted(trial.config.items()))

    def _value(self, trial) -> str:
        v = self.last.get(trial.trial_id, {}).get(self.metric)
        return f"{self.metric} {v:.4g}" if v is not None else f"{self.metric} -"

    def on_trial_start(self, iteration, trials, trial, **info):
        print(f"gan3d: trial {trial.trial_id} started: {self._params(trial)}", flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.last.setdefault(trial.trial_id, {}).update(
            {k: result[k] for k in ("kimg", self.metric) if result.get(k) is not None})

    def on_step_end(self, iteration, trials, **info):
        import time

        if time.time() - self._printed < self.every_s or not any(t.status == "RUNNING" for t in trials):
            return
        self._printed = time.time()
        lines = [f"  {t.trial_id:<14} {t.status:<10} kimg {self.last.get(t.trial_id, {}).get('kimg', 0):<8.3f} "
                 f"{self._value(t):<18} {self._params(t)}" for t in trials]
        print("gan3d: trials\n" + "\n".join(lines), flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        kimg = self.last.get(trial.trial_id, {}).get("kimg", 0.0)
        how = "finished" if kimg >= self.target - 1e-9 else "stopped by the scheduler"
        print(f"gan3d: trial {trial.trial_id} {how} at kimg {kimg:.3f}: {self._value(trial)}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"gan3d: trial {trial.trial_id} FAILED at kimg {self.last.get(trial.trial_id, {}).get('kimg', 0.0):.3f}; "
              f"its run is under runs/{trial.trial_id}* and Ray's logs say why", flush=True)
