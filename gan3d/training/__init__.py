"""Training: patch sampling and schedules, losses, augmentation, GAN phases, the per-worker loop, checkpoints."""
