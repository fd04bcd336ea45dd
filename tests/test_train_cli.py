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
