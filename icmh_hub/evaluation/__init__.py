"""Evaluation in the paper's protocol: rate, task accuracy and image quality
of a codec with or without its adapters, sweeps over rate points, Bjontegaard deltas, figures."""
