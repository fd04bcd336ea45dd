#!/usr/bin/env bash
# The EmbeddingGemma-300m fine-tuning recipe: bf16 on a GPU (fp32 on CPU, never fp16),
# the cached loss for a large effective batch (256 pairs, embedded 16 texts at a time),
# 512 tokens, the document prompt on both notes, augmented notes, a validation curve.
#   PAIRS=runs/pairs OUT=runs/gemma bash scripts/train-embeddinggemma.sh
#   MODEL=/path/to/embeddinggemma-300m ...   (a local copy; the hub id needs HF_TOKEN)
# Every setting can be overridden from the environment; tests run it for 2 steps on a tiny
# random Gemma3 on CPU.
set -euo pipefail
: "${PAIRS:?set PAIRS to a pairs directory (mimicsearch pairs)}" "${OUT:?set OUT to a run directory}"
exec mimicsearch train "${MODEL:-google/embeddinggemma-300m}" --data "$PAIRS" --out "$OUT" \
    --prompt document --max-seq-length "${MAX_SEQ_LENGTH:-512}" \
    --batch-size "${BATCH:-256}" --mini-batch-size "${MINI_BATCH:-16}" \
    --lr "${LR:-2e-5}" --warmup-ratio 0.1 --precision auto --gradient-checkpointing \
    --augment "${AUGMENT:-0.5}" --eval-every "${EVAL_EVERY:-50}" --val-max-pairs 1000 \
    --max-steps "${STEPS:-0}" --epochs "${EPOCHS:-1}" ${DEVICE:+--device "$DEVICE"} --no-progress
