"""`gan3d report`: a self-contained HTML comparison of runs and sweeps, and with --wandb a W&B Report."""
from __future__ import annotations

from gan3d.cli.options import command, out_file


def register(sub) -> None:
    p = command(sub, "report", "an HTML comparison of runs and sweeps (and a W&B Report)",
                "gan3d report runs/smoke sweeps/smoke --out report.html")
    p.add_argument("paths", nargs="+", help="run directories and/or sweep directories")
    p.add_argument("--out", default="report.html")
    p.add_argument("--metric", default="swd", help="the metric to rank and plot against hyperparameters")
    p.add_argument("--wandb", action="store_true", help="also build the W&B Report (saved when W&B is online)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from gan3d.tools.report import wandb_report, write_html

    out = write_html(args.paths, out_file(args.out), args.metric)
    print(f"gan3d: wrote {out}")
    if args.wandb:
        url, definition = wandb_report(args.paths, args.out, args.metric)
        print(f"gan3d: W&B report saved at {url}" if url else
              f"gan3d: W&B is offline; the report's definition is in {definition} (publish it when online)")
    return 0
