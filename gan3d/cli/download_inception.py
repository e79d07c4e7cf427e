"""`gan3d download-inception`: the standard FID Inception weights, on a machine with internet."""
from __future__ import annotations

from gan3d.cli.options import command


def register(sub) -> None:
    p = command(sub, "download-inception", "fetch the standard FID Inception weights (needs internet)",
                "gan3d download-inception")
    p.add_argument("--dest", help="file to write (default: ~/.cache/gan3d/)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from gan3d.metrics.inception import download_weights

    print(f"gan3d: wrote {download_weights(args.dest)}")
    return 0
