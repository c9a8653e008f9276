"""Training: the loop, losses, checkpoints (self-generated targets are a data tool: `speechllm.data.targets`)."""
