"""Does padding move a note's vector? (not a test) One variant of an exported model, one note
cut to each length n from 8 to 140 tokens: its vector alone against the same note padded to
n+1 and to the next power of two (what the Encoder's batches may do) and, to tell padding
from batch size apart, against k copies of it in one call. Prints the worst cosine of each,
and texts/s on 96 synthetic 256-token notes.

    python bench/probe_padding.py --model /work/eg/eg-vnni --runtime openvino
    python bench/probe_padding.py --model /work/eg/eg-vnni --runtime openvino \\
        --config DYNAMIC_QUANTIZATION_GROUP_SIZE=0 --config INFERENCE_PRECISION_HINT=f32

`--config KEY=VALUE` replaces the runtime settings the manifest records for the variant.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--runtime", default="onnxruntime")
    ap.add_argument("--config", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    from bench_encode import synthetic_notes

    from mimicsearch.encoder import Encoder
    from mimicsearch.model_manifest import ModelManifest

    m = ModelManifest.load(args.model)
    v = m.variant(args.precision, args.runtime)
    config = dict(v.runtime_config)
    if args.config:
        config = dict(c.split("=", 1) for c in args.config)
    enc = Encoder.from_files(Path(args.model) / v.file, Path(args.model) / m.tokenizer_file, m,
                             max_length=256, runtime=v.runtime, runtime_config=config)
    note = "Patient admitted with chest pain and shortness of breath. " * 30
    ids = enc._tok.encode(enc.prompt_text("document") + note).ids

    def run(rows: list[list[int]], length: int) -> np.ndarray:
        feed = {"input_ids": np.array([r + [m.pad_token_id] * (length - len(r)) for r in rows]),
                "attention_mask": np.array([[1] * len(r) + [0] * (length - len(r))
                                            for r in rows])}
        out = enc.runner.run(m.output_name, feed)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    worst = {"padded to n+1": 1.0, "padded to the next power of two": 1.0,
             "k copies (1-32) in one call": 1.0}
    for n in range(8, 141, 3):
        cut = ids[:n - 1] + ids[-1:]
        alone = run([cut], n)[0]
        pow2 = 1 << (n - 1).bit_length()
        for name, got in (("padded to n+1", run([cut], n + 1)[0] @ alone),
                          ("padded to the next power of two", run([cut], pow2)[0] @ alone),
                          ("k copies (1-32) in one call",
                           min(float((run([cut] * k, n) @ alone).min()) for k in (2, 8, 32)))):
            worst[name] = min(worst[name], float(got))
    texts = synthetic_notes(96, "full")
    enc.encode(texts[:8])
    start = time.perf_counter()
    enc.encode(texts)
    speed = len(texts) / (time.perf_counter() - start)
    print(f"{v.name} {config}: " + "; ".join(f"{k}: worst cosine {c:.6f}"
                                              for k, c in worst.items())
          + f"; {speed:.1f} texts/s (96 notes, 256 tokens)")


if __name__ == "__main__":
    main()
