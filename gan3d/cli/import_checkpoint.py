"""`gan3d import-checkpoint`: a reference snapshot or state dict -> a gan3d checkpoint, nothing in it executed."""
from __future__ import annotations

from gan3d.cli.options import command, out_dir


def register(sub) -> None:
    p = command(sub, "import-checkpoint", "a reference EpiGRAF snapshot (.pkl, nothing in it is run) or state dict "
                "-> a gan3d checkpoint",
                "gan3d import-checkpoint network-snapshot-025000.pkl ckpt/ffhq --preset experiments/ffhq512.yaml")
    p.add_argument("source", help="network-snapshot-<kimg>.pkl, or a .pt/.pth state dict in the reference's naming")
    p.add_argument("out", help="the gan3d checkpoint directory to write")
    p.add_argument("--preset", help="experiment YAML for what a snapshot does not record (data, training settings)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from gan3d.training.snapshot_import import import_reference

    out, report = import_reference(args.source, out_dir(args.out, "OUT"), args.preset)
    for line in report:
        print(f"  {line}")
    print(f"gan3d: wrote {out} (render, eval and training.resume= open it like any gan3d checkpoint)")
    return 0
