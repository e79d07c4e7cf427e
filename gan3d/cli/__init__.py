"""The `gan3d` command: a thin argparse front end over the Python API, one module per command (its arguments,
its handler and its example together). Every user error is one line ("gan3d: error: ...") and exit status 2."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from gan3d.cli import (bench, dataset, describe, download_inception, evaluate, import_checkpoint, invert, jobs,
                       render, report, sweep, train)
from gan3d.errors import Gan3dError

# In the order `gan3d --help` lists them.
COMMANDS = (train, sweep, bench, evaluate, render, invert, report, import_checkpoint, describe, dataset,
            download_inception, jobs)


class Parser(argparse.ArgumentParser):
    """argparse with the project's error contract: one line naming the command and what was wrong, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="gan3d", description="EpiGRAF-style 3D-aware GANs on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Options and key=value overrides in any order: `gan3d train E.yaml --out runs training.kimg=8` works.
    Words argparse leaves over that look like key=value become overrides of commands that take them."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    stray = [w for w in rest if w.startswith("-") or "=" not in w or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if rest:
        args.overrides = list(args.overrides) + rest
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    try:
        return args.handler(args)
    except Gan3dError as e:
        print(f"gan3d: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full or read-only filesystem under something gan3d writes: one line, no traceback
        from gan3d.errors import no_space

        full = no_space(e)
        if full is None:
            raise
        print(f"gan3d: error: {full.filename or 'a file'}: {full.strerror or full}; free space there or write "
              f"elsewhere", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gan3d: aborted", file=sys.stderr)
        return 130
