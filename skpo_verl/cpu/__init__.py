"""CPU backend for verl 0.9.1 (opt-in; never auto-selected): tiny model, HF generation,
platform and rollout adaptations so verl's real trainer runs on a CPU-only machine."""
