#!/usr/bin/env bash
# Write every dataset the examples use to $DATA_DIR as verl parquet (CPU only, minutes).
# Online: reads the public datasets from the Hugging Face Hub. Offline: put the raw files in
# $RAW_DIR as <source>.parquet|jsonl|json|csv (docs/data.md lists each source's columns).
set -euo pipefail
DATA_DIR=${DATA_DIR:-$HOME/data/skpo}
RAW_DIR=${RAW_DIR:-}
TEMPLATE=${TEMPLATE:-dapo}   # dapo (the paper's training prompt) or boxed

input=()
[[ -n "$RAW_DIR" ]] && input=(--input-dir "$RAW_DIR")
skpo-prepare-data --source all "${input[@]}" --output-dir "$DATA_DIR" --template "$TEMPLATE"
