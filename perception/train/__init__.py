"""Training: losses, loop, checkpoints, DDP."""
