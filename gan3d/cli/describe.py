"""`gan3d describe`: the resolved config and the model sizes."""
from __future__ import annotations

from gan3d.cli.options import command, experiment_args


def register(sub) -> None:
    p = command(sub, "describe", "print the resolved config and model sizes",
                "gan3d describe experiments/ffhq512.yaml training.patch.resolution=32")
    experiment_args(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    from gan3d.config import load_config, to_yaml
    from gan3d.nn import build_discriminator, build_generator, count_parameters

    cfg = load_config(args.experiment, args.overrides)
    print(to_yaml(cfg))
    G, D = build_generator(cfg), build_discriminator(cfg)
    g = cfg.model.generator
    print(f"generator:     {count_parameters(G):>12,} parameters (mapping {count_parameters(G.mapping):,}, "
          f"synthesis {count_parameters(G.synthesis):,}, decoder {count_parameters(G.decoder):,}); "
          f"tri-plane 3 x {g.triplane_channels} x {g.triplane_resolution}^2")
    print(f"discriminator: {count_parameters(D):>12,} parameters; {D.num_extra} extra start blocks at "
          f"{cfg.training.patch.resolution}px patches of {cfg.dataset.resolution}px images")
    return 0
