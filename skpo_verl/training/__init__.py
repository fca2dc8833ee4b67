"""Training: the driver-side estimator and per-prompt state, the prioritized sampler, and the
worker-side policy loss. Each calls the pure math in `skpo_verl.core`."""
