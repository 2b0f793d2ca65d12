#!/usr/bin/env bash
# Pretrain the toy Wan2.1-I2V model from scratch on CPU (about 2 hours on 2 cores), resumably:
# re-running continues from the checkpoints in $TOY_TRAIN_DIR (default runs/toy-train).
# Writes examples/toy/model/ (diffusers layout). Budgets: see --help of each script.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python}"
export TOY_TRAIN_DIR="${TOY_TRAIN_DIR:-runs/toy-train}"
mkdir -p "$TOY_TRAIN_DIR"
$PY -m examples.toy.pretrain_vae "$@"
$PY -m examples.toy.pretrain_transformer --minutes "${TOY_TRANSFORMER_MINUTES:-70}" --threads 2 --dtype float16
