"""Ray orchestration: Ray Train launch of one run (sweeps on Ray Tune and Ray Jobs submission build on it)."""
from gan3d.orchestrate.launch import RunResult, train

__all__ = ["RunResult", "train"]
