"""Errors users see: each message names the file, key or value and what was expected."""


class Gan3dError(Exception):
    """Base of every user-facing gan3d error; the CLI prints it as one line and exits 2."""


class ConfigError(Gan3dError, ValueError):
    """An experiment or sweep configuration is unknown, mistyped or impossible."""


class DatasetError(Gan3dError, ValueError):
    """A dataset is missing, unreadable or inconsistent."""


class CheckpointError(Gan3dError, ValueError):
    """A path is not a gan3d checkpoint, or it does not fit the model."""
