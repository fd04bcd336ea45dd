#!/usr/bin/env bash
# Installs mimicsearch with every extra into ./.venv and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -U pip
.venv/bin/pip install -q torch==2.13.0          # the CPU build; unpinned torch may pull CUDA (GBs)
.venv/bin/pip install -q -e '.[train,export,spark,serve,openvino,dev]'
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYSPARK_PYTHON="$PWD/.venv/bin/python" PYSPARK_DRIVER_PYTHON="$PWD/.venv/bin/python"
.venv/bin/python -m pytest -q "$@"
