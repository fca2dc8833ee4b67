"""Training: the driver-side estimator and per-prompt state, the prioritized sampler, the
worker-side policy loss, and SPO's offline initial values (`offline_values` estimates them,
`initial_values` reads and writes their file). Each calls the pure math in `skpo_verl.core`."""
