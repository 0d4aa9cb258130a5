"""Training: the train state and step, sharding, checkpoints, the loop and its outputs."""
