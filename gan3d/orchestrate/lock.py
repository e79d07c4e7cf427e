"""One driver per run or sweep directory: an advisory lock (fcntl.flock on `.gan3d.lock`) held while the driver
lives. The kernel drops it when the holder exits, however it exits, so a crashed or killed driver never blocks
the next run; the file's content only names the holder for the refusal line."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from gan3d.errors import Gan3dError

LOCK_FILE = ".gan3d.lock"


class DirectoryInUse(Gan3dError):
    """Another live driver holds the run or sweep directory."""


@contextmanager
def hold(directory: Path, what: str = "run"):
    """Hold `directory`'s lock for the block; another holder is one DirectoryInUse line naming it."""
    path = Path(directory) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DirectoryInUse(f"{directory}: this {what} directory is in use by another gan3d driver "
                                 f"({_holder(path)}); wait for it to finish or stop it, then rerun") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"pid {info['pid']} on {info['host']} since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
