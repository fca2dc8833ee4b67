#!/usr/bin/env bash
# GRPO with verl's stock single_turn_agent loop on SmolLM2-135M-Instruct and the word problems, on CPU:
# the same harness as cpu_smollm2_skpo.sh (see there for the variables).
exec env ALGO=grpo bash "$(dirname "$0")/cpu_smollm2_skpo.sh" "$@"
