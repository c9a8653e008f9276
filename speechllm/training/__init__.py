"""Training: the loop (`trainer`), its losses, datasets, checkpoints and end-of-run step (`finish`), the frozen
encoder's feature cache, the precision a machine trains in, and self-generated targets (`targets`)."""
