"""Training: losses, checkpoints, the FP32 loop."""
