"""What several commands share: a command's parser with its example, option types with their allowed ranges,
and output paths refused before any work."""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Optional


def command(sub, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """A command's parser, its example shown at the end of its --help."""
    return sub.add_parser(name, help=help, epilog="example:\n  " + example,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="experiment YAML, e.g. experiments/smoke.yaml")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. training.gamma=0.1")


def at_least(low: float, kind=int):
    """An option's type with its allowed range (EDM2 spells it click.IntRange): values below `low` are refused."""
    def parse_value(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value >= low or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'} >= {low:g}, "
                                             f"got {text!r}")
        return value
    return parse_value


def numbers(text: Optional[str], flag: str, n: int, kind=float) -> Optional[list]:
    """`n` comma-separated finite numbers (`--camera 1.2,0.4`), or None when the option was not given."""
    from gan3d.errors import ConfigError

    if text is None:
        return None
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{flag} {text!r}: expected {n} comma-separated finite numbers")
    return values


def out_dir(path: str, flag: str = "--out") -> str:
    """An output directory (new or existing): refused before any work if a file is in its place."""
    from gan3d.errors import ConfigError

    if Path(path).exists() and not Path(path).is_dir():
        raise ConfigError(f"{flag} {path}: a file is there; expected a directory (new or existing)")
    return path


def out_file(path: str, flag: str = "--out") -> str:
    """An output file: refused before any work if a directory is in its place."""
    from gan3d.errors import ConfigError

    if Path(path).is_dir():
        raise ConfigError(f"{flag} {path}: a directory is there; expected a file path, e.g. {Path(path) / 'report.html'}")
    return path


def default_device() -> str:
    try:
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"
