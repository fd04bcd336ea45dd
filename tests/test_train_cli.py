"""CLI wiring of pairs / train / evaluate (the logic is tested in test_train_*.py)."""
import json

from click.testing import CliRunner
from train_helpers import write_synthetic

from mimicsearch.cli import main


def _run(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_pairs_train_evaluate_commands(tiny_gemma_dir, tmp_path):
    write_synthetic(tmp_path, patients=12, notes_per_patient=3)
    out = _run(["pairs", tmp_path / "NOTEEVENTS.csv", "--out", tmp_path / "pairs",
                "--val-fraction", "0.25", "--test-fraction", "0.25", "--category", "nursing",
                "--category", "Physician"])
    assert out.splitlines()[1].split() == ["split", "patients", "notes", "pairs"]
    manifest = json.loads((tmp_path / "pairs" / "manifest.json").read_text())
    assert manifest["options"]["categories"] == ["nursing", "Physician"]

    out = _run(["train", tiny_gemma_dir, "--data", tmp_path / "pairs", "--out", tmp_path / "run",
                "--batch-size", "4", "--max-steps", "1", "--max-seq-length", "32",
                "--loss", "hierarchical", "--mini-batch-size", "2", "--gradient-checkpointing",
                "--prompt", "document", "--device", "cpu", "--no-progress"])
    assert "1 step on" in out and "(partial)" in out
    assert (tmp_path / "run" / "model" / "modules.json").is_file()

    out = _run(["evaluate", tmp_path / "run" / "model", "--data", tmp_path / "pairs",
                "--base", tiny_gemma_dir, "--prompt", "document", "--device", "cpu",
                "--no-progress", "--json"])
    result = json.loads(out)
    assert result["prompt"] == "document"
    assert json.loads((tmp_path / "run" / "training.json").read_text())["config"]["prompt"] \
        == "document"
    assert set(result["models"]) == {"base", "model"}
    assert (tmp_path / "run" / "model" / "metrics.json").is_file()
    out = _run(["evaluate", tiny_gemma_dir, "--data", tmp_path / "pairs", "--out",
                tmp_path / "m.json", "--device", "cpu", "--no-progress"])
    assert "recall@5_excluded" in out and (tmp_path / "m.json").is_file()


def test_errors_are_one_line(tiny_gemma_dir, tmp_path):
    write_synthetic(tmp_path, patients=3, notes_per_patient=2)
    result = CliRunner().invoke(main, ["pairs", str(tmp_path / "NOTEEVENTS.csv"), "--out",
                                       str(tmp_path / "p"), "--category", "nope"])
    assert result.exit_code == 1
    assert "Error: unknown note categories ['nope']" in result.output
    result = CliRunner().invoke(main, ["train", "m", "--data", str(tmp_path), "--out",
                                       str(tmp_path / "r")])
    assert result.exit_code == 1 and "missing" in result.output and "manifest.json" in result.output
    _run(["pairs", tmp_path / "NOTEEVENTS.csv", "--out", tmp_path / "p"])
    result = CliRunner().invoke(main, ["evaluate", str(tiny_gemma_dir), "--data",
                                       str(tmp_path / "p"), "--prompt", "nope"])
    assert result.exit_code == 1
    assert "unknown prompt 'nope'; the model's prompts: ['document', 'query']" in result.output


def test_the_embeddinggemma_recipe_runs_on_the_tiny_gemma3(tiny_gemma_dir, tmp_path):
    """scripts/train-embeddinggemma.sh as written (cached loss, 512 tokens, document prompt,
    augmentation, a curve), shrunk to 2 steps on CPU through its environment knobs."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    write_synthetic(tmp_path, patients=12, notes_per_patient=3)
    _run(["pairs", tmp_path / "NOTEEVENTS.csv", "--out", tmp_path / "pairs",
          "--val-fraction", "0.25", "--test-fraction", "0"])
    script = Path(__file__).parents[1] / "scripts" / "train-embeddinggemma.sh"
    env = {**os.environ, "MODEL": str(tiny_gemma_dir), "PAIRS": str(tmp_path / "pairs"),
           "OUT": str(tmp_path / "run"), "BATCH": "8", "MINI_BATCH": "4", "STEPS": "2",
           "EVAL_EVERY": "1", "DEVICE": "cpu", "MAX_SEQ_LENGTH": "48",  # the fixture's limit
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "run" / "training.json").read_text())
    c = report["config"]
    assert (c["max_seq_length"], c["mini_batch_size"], c["prompt"], c["augment"]) == (
        48, 4, "document", 0.5)
    assert "MAX_SEQ_LENGTH:-512" in script.read_text()  # the real model's recipe
    assert [p["step"] for p in report["curve"]] == [1, 2]
    assert (tmp_path / "run" / "model" / "modules.json").is_file()
