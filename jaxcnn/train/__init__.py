"""Training: state, the pure step, parallel wrappers, checkpoints, metric writers and the one loop."""
