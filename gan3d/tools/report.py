"""`gan3d report`: one self-contained HTML page comparing runs (and sweeps) from their own files --
metrics.parquet, the checkpoint config, samples/ -- so it needs no server; optionally the same comparison as
a W&B Report (saved when W&B is online, else its definition is written to a file to publish later)."""
from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from gan3d.errors import Gan3dError
from gan3d.track.store import FILE as METRICS_FILE

CURVES = ("swd", "fid2k_full", "loss_G", "loss_D_real", "loss_D_fake", "r1_penalty", "augment_p", "sec_per_kimg")


@dataclass
class RunInfo:
    name: str
    path: Path
    metrics: pd.DataFrame
    config: dict
    grid: Optional[Path]
    sweep: Optional[str] = None
    params: dict = field(default_factory=dict)  # swept hyperparameters (for sweeps)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v if not isinstance(v, list) else json.dumps(v)
    return out


def _run_config(run_dir: Path) -> dict:
    from omegaconf import OmegaConf

    from gan3d.training.checkpoint import list_checkpoints

    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        return {}
    return _flatten(OmegaConf.to_container(OmegaConf.load(ckpts[-1] / "config.yaml")))


def collect(paths: Sequence[str | Path]) -> list[RunInfo]:
    """Runs from run dirs and sweep dirs (a sweep dir has trials.parquet and runs/)."""
    from gan3d.storage import resolve_local

    runs: list[RunInfo] = []
    for p in map(resolve_local, paths):  # a run at an s3:// / gs:// URI is downloaded to the cache first
        if not p.is_dir():
            raise Gan3dError(f"{p}: no such run or sweep directory")
        if (p / "trials.parquet").is_file():
            trials = pd.read_parquet(p / "trials.parquet")
            for _, t in trials.iterrows():
                run_dir = p / "runs" / str(t.get("run_name") or t["trial_id"])
                if (run_dir / METRICS_FILE).is_file():
                    params = {k[len("config/"):]: t[k] for k in trials.columns if k.startswith("config/")}
                    runs.append(_run(run_dir, f"{p.name}/{t['trial_id']}", sweep=p.name, params=params))
        elif (p / METRICS_FILE).is_file():
            runs.append(_run(p, p.name))
        else:
            raise Gan3dError(f"{p}: neither a run (no {METRICS_FILE}) nor a sweep (no trials.parquet)")
    if not runs:
        raise Gan3dError("no runs with metrics found in " + ", ".join(map(str, paths)))
    return runs


def _run(run_dir: Path, name: str, sweep: Optional[str] = None, params: Optional[dict] = None) -> RunInfo:
    grids = sorted((run_dir / "samples").glob("grid_*.png")) if (run_dir / "samples").is_dir() else []
    return RunInfo(name, run_dir, pd.read_parquet(run_dir / METRICS_FILE), _run_config(run_dir),
                   grids[-1] if grids else None, sweep, params or {})


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def summary_table(runs: list[RunInfo], metric: str) -> pd.DataFrame:
    """One row per run: the hyperparameters that differ between runs, best and final metric, kimg."""
    configs = pd.DataFrame([{**r.config, **{f"swept:{k}": v for k, v in r.params.items()}} for r in runs])
    differing = [c for c in configs.columns if configs[c].astype(str).nunique() > 1
                 and not c.startswith(("run.name", "run.out", "logging.tags", "training.resume", "dataset.path"))]
    rows = []
    for r, (_, cfg) in zip(runs, configs.iterrows()):
        m = r.metrics
        vals = m[metric].dropna() if metric in m else pd.Series(dtype=float)
        rows.append({"run": r.name, **{c: cfg[c] for c in differing},
                     f"best {metric}": vals.min() if len(vals) else None,
                     f"final {metric}": vals.iloc[-1] if len(vals) else None, "kimg": m["kimg"].max()})
    return pd.DataFrame(rows)


def figures(runs: list[RunInfo], metric: str) -> list[tuple[str, str]]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for key in CURVES:
        if not any(key in r.metrics and r.metrics[key].notna().any() for r in runs):
            continue
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for r in runs:
            if key in r.metrics:
                d = r.metrics[["kimg", key]].dropna()
                ax.plot(d["kimg"], d[key], marker="." if len(d) < 30 else None, label=r.name)
        ax.set_xlabel("kimg")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if len(runs) <= 12:
            ax.legend(fontsize=7)
        out.append((f"{key} vs kimg", _png(fig)))
    swept = sorted({k for r in runs for k in r.params})
    if swept:
        final = [r.metrics[metric].dropna().iloc[-1] if metric in r.metrics and r.metrics[metric].notna().any()
                 else float("nan") for r in runs]
        for k in swept:
            fig, ax = plt.subplots(figsize=(4, 3))
            ax.scatter([r.params.get(k) for r in runs], final)
            ax.set_xlabel(k)
            ax.set_ylabel(f"final {metric}")
            ax.grid(alpha=0.3)
            out.append((f"final {metric} vs {k}", _png(fig)))
        frame = pd.DataFrame([{**{k: float(r.params.get(k, float("nan"))) for k in swept}, metric: f}
                              for r, f in zip(runs, final)])
        norm = (frame - frame.min()) / (frame.max() - frame.min()).replace(0, 1)
        fig, ax = plt.subplots(figsize=(6, 3.2))
        cmap = plt.get_cmap("viridis")
        for i in range(len(norm)):
            ax.plot(range(len(norm.columns)), norm.iloc[i].values, color=cmap(norm[metric].iloc[i]), alpha=0.8)
        ax.set_xticks(range(len(norm.columns)), norm.columns, rotation=20, fontsize=7)
        ax.set_ylabel("normalised value")
        out.append(("parallel coordinates (colour = metric)", _png(fig)))
    return out


def write_html(paths: Sequence[str | Path], out: str | Path, metric: str = "swd") -> Path:
    runs = collect(paths)
    table = summary_table(runs, metric)
    figs = figures(runs, metric)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>gan3d report</title><style>",
             "body{font-family:sans-serif;margin:2em;max-width:1200px} table{border-collapse:collapse}",
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px} .figs{display:flex;flex-wrap:wrap}",
             ".grids div{display:inline-block;margin:6px;text-align:center;font-size:12px}</style></head><body>",
             f"<h1>gan3d report</h1><p>{len(runs)} run(s) from {html.escape(', '.join(map(str, paths)))}; "
             f"metric: {html.escape(metric)}</p>", "<h2>Runs</h2>",
             table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", classes="runs"),
             "<h2>Curves</h2><div class='figs'>"]
    parts += [f"<figure><img alt='{html.escape(t)}' src='{src}'><figcaption>{html.escape(t)}</figcaption></figure>"
              for t, src in figs]
    parts.append("</div><h2>Latest samples</h2><div class='grids'>")
    parts += [f"<div><img alt='samples {html.escape(r.name)}' src='{_img(r.grid)}' width='256' "
              f"style='image-rendering:pixelated'><br>{html.escape(r.name)}</div>" for r in runs if r.grid]
    parts.append("</div></body></html>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts))
    return out


def wandb_report(paths: Sequence[str | Path], out: str | Path, metric: str = "swd", project: str = "gan3d",
                 entity: str = "") -> tuple[Optional[str], Path]:
    """The comparison as a W&B Report: saved when W&B is online (returns its URL); always written as JSON
    next to `out` so an offline machine can publish it later."""
    import wandb_workspaces.reports.v2 as wr

    from gan3d.track.wandb_run import resolve_mode
    from gan3d.config import LoggingConfig

    runs = collect(paths)
    groups = sorted({r.sweep for r in runs if r.sweep}) or sorted({r.name for r in runs})
    swept = sorted({k for r in runs for k in r.params})
    runset = wr.Runset(entity=entity or "", project=project, name="gan3d runs",
                       filters=" or ".join(f"Group = '{g}'" for g in groups) if any(r.sweep for r in runs) else "")
    panels = [wr.LinePlot(title=f"{k} vs kimg", x="kimg", y=[k]) for k in CURVES[:5]]
    if swept:
        panels.append(wr.ParallelCoordinatesPlot(columns=[wr.ParallelCoordinatesPlotColumn(metric=f"c::{k}")
                                                          for k in swept] +
                                                 [wr.ParallelCoordinatesPlotColumn(metric=metric)]))
    panels.append(wr.MediaBrowser(media_keys=["samples/grid"], num_columns=4))
    report = wr.Report(project=project, entity=entity or "", title="gan3d comparison",
                       description=f"{len(runs)} runs: {', '.join(groups)}",
                       blocks=[wr.H1("gan3d comparison"), wr.PanelGrid(runsets=[runset], panels=panels)])
    definition = Path(out).with_suffix(".wandb-report.json")
    # wandb-workspaces has no public serialiser; its internal model is the Report's saved viewspec
    definition.write_text(report._to_model().model_dump_json(indent=1))
    if resolve_mode(LoggingConfig()) != "online":
        return None, definition
    report.save()
    return report.url, definition
