"""Errors users see: each message names the file, key or value and what was expected."""


class Gan3dError(Exception):
    """Base of every user-facing gan3d error; the CLI prints it as one line and exits 2."""


class ConfigError(Gan3dError, ValueError):
    """An experiment or sweep configuration is unknown, mistyped or impossible."""


class DatasetError(Gan3dError, ValueError):
    """A dataset is missing, unreadable or inconsistent."""


class CheckpointError(Gan3dError, ValueError):
    """A path is not a gan3d checkpoint, or it does not fit the model."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (its type if none), for a one-line error."""
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)[:limit]
