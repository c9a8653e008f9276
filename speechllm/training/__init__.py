"""Training: the loop (`trainer`), its losses, datasets, checkpoints and end-of-run step (`finish`), the frozen
encoder's feature cache and the precision a machine trains in (self-generated targets are a data tool:
`speechllm.data.targets`)."""
