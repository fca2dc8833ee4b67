#!/usr/bin/env bash
# GRPO with verl's stock single_turn_agent loop on the bundled tiny model and task, on CPU:
# the same harness as cpu_tiny_skpo.sh (see there for the variables).
exec env ALGO=grpo bash "$(dirname "$0")/cpu_tiny_skpo.sh" "$@"
