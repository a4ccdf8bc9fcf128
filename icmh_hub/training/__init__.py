"""Training: recipes, data, the training forward, and the trainer (adapters or the whole codec)."""
