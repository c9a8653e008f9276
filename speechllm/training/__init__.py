"""Training: the loop, losses, self-generated targets (`speechllm.training.targets`), checkpoints."""
