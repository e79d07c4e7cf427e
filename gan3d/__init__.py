"""gan3d: EpiGRAF-style 3D-aware GANs (patch-wise tri-plane generator, scale-aware patch discriminator,
annealed Beta patch scales), trained on Ray Train and tracked in W&B.

    import gan3d
    cfg = gan3d.load_config("experiments/smoke.yaml", ["training.gamma=0.1"])
    result = gan3d.train(cfg)            # -> RunResult(run_dir, kimg, best_metric, best_checkpoint, ...)
    G = gan3d.load_generator(result.best_checkpoint)
"""
from gan3d.config import ExperimentConfig, load_config
from gan3d.errors import CheckpointError, ConfigError, DatasetError, Gan3dError

__version__ = "0.1.0"


def train(cfg, **kwargs):
    """Train one run on Ray Train; see gan3d.orchestrate.launch.train."""
    from gan3d.orchestrate.launch import train as _train
    return _train(cfg, **kwargs)


def sweep(spec, overrides=(), **kwargs):
    """Run or resume a Ray Tune sweep (a sweep YAML path or a parsed Sweep); see gan3d.orchestrate.sweep."""
    from gan3d.orchestrate.sweep import sweep as _sweep
    return _sweep(spec, overrides, **kwargs)


def load_generator(checkpoint, device="cpu", ema: bool = True, ray_step_multiplier: float = 1.0):
    """G_ema (or G) from a checkpoint directory, in eval mode; see gan3d.training.checkpoint.load_generator."""
    from gan3d.training.checkpoint import load_generator as _load
    return _load(checkpoint, device, ema, ray_step_multiplier)


def export_mesh(G, seed: int, out, resolution: int = 128, cube_size=None, level=None):
    """Density of one seed to an MRC volume and marching-cubes PLY / OBJ meshes; returns their paths."""
    from gan3d.tools.visualize import export_mesh as _export
    return _export(G, seed, out, resolution, cube_size, level)


def invert(G, images, cameras, settings=None, **kwargs):
    """Photos [N, 3, R, R] in [-1, 1] seen from cameras [N, 3] -> one Inversion each (latent ws, camera,
    reconstruction, metrics, and for mode 'pti' the tuned generator); settings: gan3d.tools.inversion.InvertSettings
    or its fields as keywords (mode='wplus', steps=300, ...)."""
    from gan3d.tools.inversion import InvertSettings, invert as _invert
    return _invert(G, images, cameras, settings or InvertSettings(**kwargs))


__all__ = ["export_mesh", "invert", "ExperimentConfig", "load_config", "train", "sweep", "load_generator", "Gan3dError", "ConfigError",
           "DatasetError", "CheckpointError"]
