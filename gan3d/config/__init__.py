"""The typed experiment schema: one frozen dataclass per concept, merged with OmegaConf.

An experiment is `ExperimentConfig` defaults <- a YAML preset <- `key=value` overrides (dotted paths,
like the seed's Hydra overrides). Unknown keys, wrong types and impossible values raise `ConfigError`
naming the key, the value and what is allowed. Everything downstream receives the frozen dataclass
instances, never dicts read with `.get()`.
"""
from gan3d.config.load import (apply_overrides, check_batch, from_dict, load_config, merge, read_yaml, replace,
                               set_values, to_dict, to_yaml, validate)
from gan3d.config.schema import (AUGMENT_KINDS, CAMERA_DISTS, CPU_MALLOCS, METRICS, PATCH_DISTS, PLACEMENTS, PRECISIONS,
                                 STORAGE_SCHEMES, AugmentConfig, BackgroundConfig, CameraConfig, DatasetConfig,
                                 DiscriminatorConfig, ExperimentConfig, GeneratorConfig, LoggingConfig, MetricsConfig,
                                 ModelConfig, PatchConfig, RenderConfig, Rule, RunSettings, TrainingConfig,
                                 WorkerResources, uri_scheme)

__all__ = ["apply_overrides", "check_batch", "from_dict", "load_config", "merge", "read_yaml", "replace", "set_values",
           "to_dict", "to_yaml", "validate", "AUGMENT_KINDS", "CAMERA_DISTS", "CPU_MALLOCS", "METRICS", "PATCH_DISTS",
           "PLACEMENTS", "PRECISIONS", "STORAGE_SCHEMES", "AugmentConfig", "BackgroundConfig", "CameraConfig",
           "DatasetConfig", "DiscriminatorConfig", "ExperimentConfig", "GeneratorConfig", "LoggingConfig",
           "MetricsConfig", "ModelConfig", "PatchConfig", "RenderConfig", "Rule", "RunSettings", "TrainingConfig",
           "WorkerResources", "uri_scheme"]
