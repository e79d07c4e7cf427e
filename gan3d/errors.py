"""Errors users see: each message names the file, key or value and what was expected."""
from __future__ import annotations

import errno
import os
from typing import Optional


class Gan3dError(Exception):
    """Base of every user-facing gan3d error; the CLI prints it as one line and exits 2."""


class ConfigError(Gan3dError, ValueError):
    """An experiment or sweep configuration is unknown, mistyped or impossible."""


class DatasetError(Gan3dError, ValueError):
    """A dataset is missing, unreadable or inconsistent."""


class CheckpointError(Gan3dError, ValueError):
    """A path is not a gan3d checkpoint, or it does not fit the model."""


class StorageFull(Gan3dError, OSError):
    """A filesystem that cannot take what gan3d writes (full, over quota, read-only): retrying cannot help."""


NO_SPACE = {errno.ENOSPC: "no space left", errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "it is read-only", errno.EFBIG: "a file grew past the allowed size"}


def no_space(e: BaseException) -> Optional[OSError]:
    """The OSError of a full, over-quota or read-only filesystem behind `e` (its causes included), or None. Some
    libraries (pyarrow, Ray) re-raise it without the errno: their message is read then."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and (e.errno in NO_SPACE or any(os.strerror(n) in str(e) for n in NO_SPACE)):
            return e
        e = e.__cause__ or e.__context__
    return None


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (its type if none), for a one-line error."""
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)[:limit]
