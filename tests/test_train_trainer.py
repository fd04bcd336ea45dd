"""End-to-end fine-tuning on CPU: MiniLM learns, tiny Gemma3 trains, resume replays exactly."""
import json

import numpy as np
import pytest
import torch
from mimicsearch.train.losses import chapter_matrix, make_loss
from mimicsearch.train.modeling import load_model
from mimicsearch.train.pairs import PairOptions, Split, load_table, make_pairs
from mimicsearch.train.trainer import TrainConfig, load_training, train
from train_helpers import write_synthetic


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = write_synthetic(tmp_path_factory.mktemp("synth"), patients=12, notes_per_patient=3)
    make_pairs(root / "NOTEEVENTS.csv", root / "pairs",
               options=PairOptions(val_fraction=0.2, test_fraction=0.0, seed=0))
    return root / "pairs"


def _train_loss(model_dir, data_dir, kind="infonce"):
    """Loss over all training pairs as one batch, no dropout."""
    model = load_model(model_dir, device="cpu").eval()
    model.max_seq_length = 32
    pairs = load_table(data_dir, "pairs", Split.TRAIN)
    features = [model.preprocess(pairs["anchor_text"].tolist()),
                model.preprocess(pairs["positive_text"].tolist())]
    with torch.no_grad():
        return make_loss(kind, model)(features, chapter_matrix(pairs["chapters"])).item()


def test_finetune_minilm_loss_goes_down(minilm_dir, data_dir, tmp_path):
    config = TrainConfig(model=str(minilm_dir), data=str(data_dir), out=str(tmp_path / "run"),
                         loss="hierarchical", epochs=2, batch_size=8, lr=1e-4,
                         warmup_ratio=0.0, max_seq_length=32, device="cpu", progress=False)
    report = train(config)
    assert report["train_pairs"] == 20 and report["steps_per_epoch"] == 3
    assert [e["epoch"] for e in report["history"]] == [1, 2]
    assert all(0 <= e["val"]["recall@10_excluded"] <= 1 for e in report["history"])
    assert report["history"][1]["loss"] < report["history"][0]["loss"]
    before = _train_loss(minilm_dir, data_dir, "hierarchical")
    after = _train_loss(tmp_path / "run" / "model", data_dir, "hierarchical")
    assert after < 0.9 * before, (before, after)
    saved = load_training(tmp_path / "run")
    assert saved["config"]["loss"] == "hierarchical"
    assert saved["data"]["files"] == json.loads((data_dir / "manifest.json").read_text())["files"]
    with pytest.raises(FileExistsError, match="--resume"):
        train(config)


def _weights(model_dir):
    model = load_model(model_dir, device="cpu")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_tiny_gemma3_trains_and_resume_replays_the_same_run(tiny_gemma_dir, data_dir, tmp_path):
    common = {"model": str(tiny_gemma_dir), "data": str(data_dir), "epochs": 2, "batch_size": 8,
                  "lr": 1e-3, "max_seq_length": 48, "device": "cpu", "progress": False}
    straight = train(TrainConfig(out=str(tmp_path / "a"), **common))
    assert straight["steps"] == 6
    assert all(np.isfinite(e["loss"]) for e in straight["history"])

    first = train(TrainConfig(out=str(tmp_path / "b"), max_steps=2, **common))
    assert first["steps"] == 2 and first["history"][-1]["partial"]
    resumed = train(TrainConfig(out=str(tmp_path / "b"), **common), resume=True)
    assert resumed["steps"] == 6
    a, b = _weights(tmp_path / "a" / "checkpoint"), _weights(tmp_path / "b" / "checkpoint")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    assert resumed["history"][-1]["loss"] == pytest.approx(straight["history"][-1]["loss"])

    with pytest.raises(ValueError, match=r"settings differ.*'lr': \(0.001, 0.01\)"):
        train(TrainConfig(out=str(tmp_path / "b"), **{**common, "lr": 1e-2}), resume=True)


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match=r"unknown precision 'fp16'; valid: \['auto', 'fp32'"):
        TrainConfig(model="m", data="d", out="o", precision="fp16")
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        TrainConfig(model="m", data="d", out="o", batch_size=1)
    c = TrainConfig(model="m", data="d", out="o", loss="hierarchical")
    assert TrainConfig.from_dict(c.to_dict()) == c


def test_eval_every_records_a_curve_and_augment_retells_the_notes(tiny_gemma_dir, data_dir,
                                                                  tmp_path):
    report = train(TrainConfig(model=str(tiny_gemma_dir), data=str(data_dir),
                               out=str(tmp_path / "run"), epochs=1, batch_size=8, lr=1e-3,
                               max_seq_length=48, eval_every=1, augment=0.8, device="cpu",
                               progress=False))
    curve = report["curve"]
    assert [c["step"] for c in curve] == [1, 2, 3]
    assert all(np.isfinite(c["loss"]) and 0 <= c["val"]["recall@10_excluded"] <= 1
               for c in curve)
    assert sum(c.get("best", False) for c in curve) >= 1 and curve[0]["best"]
    saved = json.loads((tmp_path / "run" / "training.json").read_text())
    assert saved["curve"] == curve and saved["config"]["augment"] == 0.8
    with pytest.raises(ValueError, match="augment"):
        TrainConfig(model="m", data="d", out="o", augment=1.5)


def test_augment_keeps_the_patient_facts_and_is_seeded():
    import random

    from mimicsearch.train.augment import augment

    note = ("Allergies: sulfa. Meds: apixaban 5 mg BID; furosemide 40 mg. Plan: continue "
            "diuresis. Device: L PICC line. Follow up with cardiology in 2 weeks. Family "
            "updated at bedside.")
    assert augment(note, random.Random(0), 0.0) == note
    a = augment(note, random.Random(1), 1.0)
    assert a == augment(note, random.Random(1), 1.0) and a != note
    outs = [augment(note, random.Random(i), 1.0) for i in range(200)]
    kept = np.mean(["apixaban" in o.lower() for o in outs])
    assert 0.5 < kept < 1.0  # usually kept, sometimes dropped with its sentence
    assert len({o.split(".")[0] for o in outs}) > 3  # openings differ: no fixed layout
