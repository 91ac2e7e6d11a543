"""Training: losses, checkpoints, the loop (fp32 or mixed precision, on a CPU or GPU)."""
