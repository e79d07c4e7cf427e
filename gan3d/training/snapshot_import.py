"""A reference file -> a gan3d checkpoint directory: a snapshot (.pkl, opened without running its code) or a
reference-named state dict (.pt/.pth), converted by training/snapshot.py and written by training/checkpoint.py, once
per content into the cache when a command is handed one directly."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from gan3d.errors import CheckpointError
from gan3d.storage import file_sha256
from gan3d.training.checkpoint import IMPORTABLE, META, Counters, write_checkpoint


def import_reference(source: str | Path, out_dir: str | Path, preset: Optional[str] = None) -> tuple[Path, list[str]]:
    """A reference snapshot (.pkl, opened without running its code) or reference-named state dict (.pt/.pth)
    -> a gan3d checkpoint directory: tensors, config.yaml, meta.json with the source's sha256 and the report.
    Everything is checked before anything is written."""
    from gan3d.nn import build_discriminator, build_generator
    from gan3d.nn.reference_names import load_reference_state
    from gan3d.training import snapshot
    from gan3d.training.augment import AugmentPipe

    source, out_dir = Path(source), Path(out_dir)
    if source.is_dir():
        raise CheckpointError(f"{source}: a directory; import-checkpoint takes a reference snapshot "
                              f"(network-snapshot-*.pkl) or a state dict (.pt/.pth); a gan3d checkpoint needs no import")
    if source.exists() and source.suffix not in IMPORTABLE:
        raise CheckpointError(f"{source}: not a reference snapshot (.pkl) or state dict (.pt/.pth)")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / META).is_file():
        raise CheckpointError(f"{out_dir}: exists and is not a gan3d checkpoint; expected a new directory (an earlier "
                              f"import there would be replaced)")
    conv = (snapshot.convert_snapshot(source, preset) if source.suffix == ".pkl"
            else snapshot.convert_state_dict(source, preset))
    modules: dict[str, torch.nn.Module] = {}
    dropped: set[str] = set()
    for name, state in conv.states.items():
        module = build_discriminator(conv.cfg) if name == "D" else build_generator(conv.cfg)
        dropped |= set(load_reference_state(module, state, "D" if name == "D" else "G", f"{source} ({name})"))
        modules[name] = module
    if "G" not in modules:  # a state dict of G_ema alone: G starts as its copy
        modules["G"] = build_generator(conv.cfg)
        modules["G"].load_state_dict(modules["G_ema"].state_dict())
    a = conv.cfg.training.augment
    modules["augment"] = AugmentPipe(a.kind, conv.augment_p if conv.augment_p is not None else a.p, a.target, a.speed_kimg)
    report = conv.report + [f"loaded {', '.join(sorted(conv.states))}; dropped {len(dropped)} reference tensors gan3d "
                            f"computes or never uses ({', '.join(sorted(dropped)[:4])}{', ...' if len(dropped) > 4 else ''})"]
    if conv.augment_p is not None:
        report.append(f"augment p {conv.augment_p:.4g}")
    meta = {"imported_from": {"file": str(source.resolve()), "sha256": file_sha256(source), "report": report}}
    out = write_checkpoint(out_dir, conv.cfg, modules, {}, Counters(cur_nimg=int(round(conv.kimg * 1000))), {}, {},
                           extra_meta=meta)
    return out, report


def imported(source: Path) -> Path:
    """The gan3d checkpoint of a reference file, converted once into the cache (keyed by its content)."""
    from gan3d.storage import cache_root

    dest = cache_root() / "imports" / file_sha256(source)[:24]
    if not (dest / META).is_file():
        import_reference(source, dest)
    return dest
