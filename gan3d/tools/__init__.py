"""What you do with a trained checkpoint or an experiment: evaluate its metrics, render it, compare runs in a
report, invert photos into it, and benchmark a config. Each is a library module the CLI (gan3d.cli) calls."""
