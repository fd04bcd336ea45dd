"""Fine-tuning loop: every setting in TrainConfig, a loop that reads top to bottom.

A run directory holds:
  model/          best checkpoint by validation recall (a sentence-transformers dir, save_model)
  checkpoint/     last state for --resume: model + state.pt (optimizer, scheduler, step, RNG)
  training.json   config, data hashes, per-epoch loss and validation metrics
"""
from __future__ import annotations

import enum
import logging
import math
import os
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from sentence_transformers.util.tensor import batch_to_device
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from mimicsearch.fileio import atomic_path, read_json, write_json

from .augment import augment
from .batching import PatientBatchSampler
from .evaluate import next_note_recall, st_embedder
from .losses import TEMPERATURE, LossKind, chapter_matrix, make_loss
from .modeling import load_model, prompt_text, save_model
from .pairs import PairsManifest, Split, load_table

log = logging.getLogger(__name__)
BEST_METRIC = "recall@10_excluded"


class TrainPrecision(str, enum.Enum):
    AUTO = "auto"  # bf16 autocast on GPU, fp32 on CPU
    FP32 = "fp32"
    BF16 = "bf16"  # fp16 is deliberately absent: Gemma3 activations overflow it


@dataclass(frozen=True)
class TrainConfig:
    model: str                         # base model: sentence-transformers dir or hub id
    data: str                          # pairs directory (mimicsearch pairs)
    out: str                           # run directory
    loss: LossKind = LossKind.INFONCE  # infonce | hierarchical (seed's ICD-9 chapter targets)
    temperature: float = TEMPERATURE   # logits = cosine / temperature
    epochs: int = 1
    batch_size: int = 32               # pairs per step; in-batch negatives = batch_size - 1
    mini_batch_size: int = 0           # > 0: GradCache, embed this many at a time
    lr: float = 2e-5                   # AdamW peak learning rate
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1          # of all steps, linear warm-up before the cosine decay
    grad_clip: float = 1.0             # max global grad norm
    max_seq_length: int = 256          # tokens per note (up to the model's maximum)
    prompt: str | None = None          # name of a model prompt prepended to every note
    distinct_patients: bool = True     # no two pairs of one patient in a batch
    gradient_checkpointing: bool = False
    precision: TrainPrecision = TrainPrecision.AUTO
    max_steps: int = 0                 # > 0: stop after this many steps; the schedule still
                                       # spans all epochs, so --resume continues the same run
    max_train_pairs: int = 0           # > 0: train on a seeded sample of this many pairs
    val_max_pairs: int = 2000          # validation pairs used per epoch (cost cap)
    checkpoint_every: int = 0          # > 0: also save checkpoint/ every this many steps
    eval_every: int = 0                # > 0: also score validation every this many steps
                                       # (the curve in training.json; best model kept)
    augment: float = 0.0               # strength of training-time text augmentation, 0..1
    seed: int = 0
    device: str | None = None          # default: cuda if available
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "loss", _enum(LossKind, self.loss, "loss"))
        object.__setattr__(self, "precision", _enum(TrainPrecision, self.precision, "precision"))
        for name in ("epochs", "batch_size", "max_seq_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for in-batch negatives, got "
                             f"{self.batch_size}")
        if not 0 <= self.augment <= 1:
            raise ValueError(f"augment must be in [0, 1], got {self.augment}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["loss"], d["precision"] = self.loss.value, self.precision.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"training config: unknown fields {sorted(unknown)}; "
                             f"valid: {sorted(known)}")
        return cls(**d)


def train(config: TrainConfig, resume: bool = False) -> dict:
    """Fine-tune `config.model` on the train split of `config.data`; returns training.json."""
    out = Path(config.out)
    ckpt = out / "checkpoint"
    state_path = ckpt / "state.pt"
    if resume and not state_path.is_file():
        raise FileNotFoundError(f"cannot resume: missing {state_path} (start without --resume)")
    if not resume and (out / "training.json").is_file():
        raise FileExistsError(f"{out} already holds a run (training.json): pass --resume to "
                              "continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    _seed_everything(config.seed)

    # -- data -------------------------------------------------------------------------------
    manifest = PairsManifest.load(config.data)
    pairs = load_table(config.data, "pairs", Split.TRAIN)
    if config.max_train_pairs and len(pairs) > config.max_train_pairs:
        pairs = pairs.sample(config.max_train_pairs, random_state=config.seed)
        pairs = pairs.sort_index().reset_index(drop=True)
    if len(pairs) < 2:
        raise ValueError(f"{config.data}: {len(pairs)} training pairs; need at least 2")
    val_pairs = load_table(config.data, "pairs", Split.VAL)
    if len(val_pairs) > config.val_max_pairs:
        val_pairs = val_pairs.sample(config.val_max_pairs, random_state=config.seed)
    anchors, positives = pairs["anchor_text"].tolist(), pairs["positive_text"].tolist()
    labels = chapter_matrix(pairs["chapters"].tolist())  # (N, n_chapters)
    sampler = PatientBatchSampler(pairs["subject_id"].to_numpy(), config.batch_size,
                                  seed=config.seed, distinct_patients=config.distinct_patients)

    # -- model, loss, optimizer -------------------------------------------------------------
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(ckpt if resume else config.model, device=device)
    _set_max_seq_length(model, config.max_seq_length)
    prompt = prompt_text(model, config.prompt)
    autocast_dtype = _autocast_dtype(config.precision, device)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable({"use_reentrant": False})
    loss_fn = make_loss(config.loss, model, config.temperature, config.mini_batch_size or None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay, foreach=True)
    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * config.epochs
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, math.ceil(config.warmup_ratio * total_steps), max(total_steps, 1))

    state = {"epoch": 0, "batch": 0, "step": 0, "best": -math.inf, "history": [],
             "epoch_losses": [], "curve": []}
    if resume:
        state = _load_state(state_path, config, optimizer, scheduler)
    report = {"config": config.to_dict(), "data": {"files": manifest.files,
                                                   "sources": manifest.sources},
              "train_pairs": len(pairs), "val_pairs": len(val_pairs),
              "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
              "best_metric": BEST_METRIC, "history": state["history"], "steps": state["step"],
              "curve": state.setdefault("curve", [])}

    def validate() -> tuple[dict | None, float]:
        if len(val_pairs) < 2:
            return None, -math.inf
        val = next_note_recall(st_embedder(model, config.batch_size, prompt=config.prompt),
                               val_pairs)
        model.train()
        return val, val[BEST_METRIC]

    # -- loop -------------------------------------------------------------------------------
    done = False
    for epoch in range(state["epoch"], config.epochs):
        sampler.set_epoch(epoch)
        batches = list(sampler)[state["batch"]:]
        model.train()
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not config.progress, leave=False)
        for batch in bar:
            rng = random.Random(f"{config.seed}:{state['step']}")
            features = [model.preprocess([augment(texts[i], rng, config.augment)
                                          for i in batch], prompt=prompt)
                        for texts in (anchors, positives)]
            features = [batch_to_device(f, model.device) for f in features]
            with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype,
                                enabled=autocast_dtype is not None):
                loss = loss_fn(features, labels[batch].to(model.device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["batch"] += 1
            loss = loss.item()
            state["epoch_losses"].append(loss)
            bar.set_postfix(loss=f"{loss:.4f}")
            if config.eval_every and state["step"] % config.eval_every == 0:
                val, score = validate()
                recent = state["epoch_losses"][-config.eval_every:]
                point = {"step": state["step"], "loss": float(np.mean(recent)), "val": val}
                if score > state["best"]:
                    state["best"] = score
                    point["best"] = True
                    save_model(model, out / "model")
                state["curve"].append(point)
                write_json(out / "training.json", report)
            if config.checkpoint_every and state["step"] % config.checkpoint_every == 0:
                _save_checkpoint(model, ckpt, state, config, optimizer, scheduler)
            if config.max_steps and state["step"] >= config.max_steps:
                done = True
                break
        bar.close()

        losses = state["epoch_losses"]
        entry = {"epoch": epoch + 1, "steps": len(losses), "global_step": state["step"],
                 "loss": float(np.mean(losses)) if losses else None,
                 "first_loss": losses[0] if losses else None,
                 "last_loss": losses[-1] if losses else None}
        if done and state["batch"] < steps_per_epoch:
            entry["partial"] = True  # stopped by max_steps; --resume continues this epoch
        if len(val_pairs) >= 2:
            entry["val"], score = validate()
        else:
            score = -entry["loss"] if losses else -math.inf  # no validation: lowest train loss
        if score > state["best"] or not (out / "model").is_dir():
            state["best"] = score
            entry["best"] = True
            save_model(model, out / "model")
        state["history"].append(entry)
        log.info("epoch %d: loss %s, val %s", epoch + 1, entry["loss"], entry.get("val"))
        if not entry.get("partial"):
            state.update(epoch=epoch + 1, batch=0, epoch_losses=[])
        _save_checkpoint(model, ckpt, state, config, optimizer, scheduler)
        report["history"] = state["history"]
        report["steps"] = state["step"]
        write_json(out / "training.json", report)
        if done:
            break
    return report


def load_training(run_dir: str | os.PathLike) -> dict:
    """training.json of a run, its config validated."""
    report = read_json(Path(run_dir) / "training.json")
    TrainConfig.from_dict(report["config"])
    return report


def _save_checkpoint(model, ckpt: Path, state: dict, config: TrainConfig, optimizer,
                     scheduler) -> None:
    save_model(model, ckpt)
    payload = {"state": state, "config": config.to_dict(), "optimizer": optimizer.state_dict(),
               "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
               "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    with atomic_path(ckpt / "state.pt") as tmp:
        torch.save(payload, tmp)


def _load_state(path: Path, config: TrainConfig, optimizer, scheduler) -> dict:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    saved = payload["config"]
    changed = {k: (saved.get(k), v) for k, v in config.to_dict().items()
               if k not in ("epochs", "progress", "device", "max_steps") and saved.get(k) != v}
    if changed:
        raise ValueError(f"cannot resume {path.parent.parent}: settings differ from the "
                         f"checkpoint (saved, given): {changed}; rerun with the saved settings")
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return payload["state"]


def _set_max_seq_length(model, max_seq_length: int) -> None:
    limit = _model_max_length(model)
    if limit is not None and max_seq_length > limit:
        raise ValueError(f"max_seq_length={max_seq_length} exceeds the model's maximum {limit}; "
                         f"use --max-seq-length {limit} or less")
    model.max_seq_length = max_seq_length


def _model_max_length(model) -> int | None:
    backbone = getattr(model[0], "auto_model", None)
    limits = [getattr(getattr(backbone, "config", None), "max_position_embeddings", None)]
    tok = getattr(model, "tokenizer", None)
    if tok is not None and getattr(tok, "model_max_length", 0) < 1_000_000:
        limits.append(tok.model_max_length)
    limits = [x for x in limits if x]
    return min(limits) if limits else None


def _autocast_dtype(precision: TrainPrecision, device: str) -> torch.dtype | None:
    is_cuda = torch.device(device).type == "cuda"
    if precision is TrainPrecision.FP32 or (precision is TrainPrecision.AUTO and not is_cuda):
        return None
    if not is_cuda:
        raise ValueError(f"precision=bf16 needs a GPU (device {device!r}); use fp32 or auto")
    return torch.bfloat16


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _enum(cls, value, name):
    try:
        return cls(value)
    except ValueError:
        raise ValueError(f"unknown {name} {value!r}; valid: {[c.value for c in cls]}") from None

