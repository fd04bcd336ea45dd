"""CLI commands: pairs, train, evaluate (the [train] extra)."""
from __future__ import annotations

import json
import math

import click

from ._errors import fail
from ..schema import COLUMNS_HELP
from ._extras import import_stage

_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, RuntimeError)


@click.command("pairs")
@click.argument("notes_csv", metavar="NOTES...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for pairs/notes/diagnoses/splits Parquet + manifest.json.")
@click.option("--diagnoses", type=click.Path(exists=True, dir_okay=False),
              help="MIMIC-III DIAGNOSES_ICD.csv or MIMIC-IV diagnoses_icd.csv.gz (ICD-9 and "
              "ICD-10; default: the one beside the first of NOTES, if any).")
@click.option("--columns", metavar="ROLE=COL,…", help=COLUMNS_HELP)
@click.option("--within-admission", is_flag=True,
              help="Pair only consecutive notes of the same admission.")
@click.option("--category", "categories", multiple=True, metavar="NAME",
              help="Keep only this note category (repeatable; case and trailing spaces ignored).")
@click.option("--min-chars", default=50, show_default=True, type=click.IntRange(0),
              help="Drop notes of at most this many characters.")
@click.option("--val-fraction", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="Share of patients held out for validation (checkpoint choice).")
@click.option("--test-fraction", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="Share of patients held out for the final test (never trained on).")
@click.option("--seed", default=0, show_default=True, type=int, help="Patient split seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def pairs_cmd(notes_csv, out, diagnoses, columns, within_admission, categories, min_chars,
              val_fraction, test_fraction, seed, as_json):
    """Build temporal note pairs (a patient's note and their next note) from NOTES, split by
    patient into train/val/test.

    NOTES: one or more note tables of one layout, detected from the columns: MIMIC-III
    NOTEEVENTS.csv, MIMIC-IV-Note (discharge.csv.gz radiology.csv.gz; addenda, AD/AR, take
    no part in pairs), OMOP NOTE; any other with --columns. A patient's notes are ordered
    by time (the exact time where a note has one, else the start of its date), then
    sequence, then id.
    """
    pairs = import_stage("mimicsearch.train.pairs", "train")
    try:
        options = pairs.PairOptions(min_chars=min_chars, within_admission=within_admission,
                                    categories=tuple(categories), val_fraction=val_fraction,
                                    test_fraction=test_fraction, seed=seed)
        manifest = pairs.make_pairs(list(notes_csv), out, diagnoses, options, columns)
    except _ERRORS as e:
        raise fail(e) from None
    if as_json:
        click.echo(json.dumps(manifest.to_dict(), indent=2))
        return
    click.echo(f"{out}:")
    click.echo(f"{'split':6} {'patients':>9} {'notes':>9} {'pairs':>9}")
    for split, c in manifest.counts.items():
        click.echo(f"{split:6} {c['patients']:9d} {c['notes']:9d} {c['pairs']:9d}")


@click.command("train")
@click.argument("model")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="Pairs directory (mimicsearch pairs).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run directory: model/ (best), checkpoint/ (last), training.json.")
@click.option("--loss", default="infonce", show_default=True,
              type=click.Choice(["infonce", "hierarchical"]),
              help="infonce: the next note is the only positive; hierarchical: soft targets "
              "from the diagnosis chapters (ICD-9 and ICD-10 in one scheme) two admissions "
              "share (pairs built with --diagnoses).")
@click.option("--epochs", default=1, show_default=True, type=click.IntRange(1),
              help="Passes over the training pairs.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(2),
              help="Pairs per step; the other positives of a batch are its negatives.")
@click.option("--mini-batch-size", default=0, show_default=True, type=click.IntRange(0),
              help="> 0: cached loss (GradCache) embedding this many texts at a time, so "
                   "--batch-size can exceed memory.")
@click.option("--lr", default=2e-5, show_default=True, type=float,
              help="Peak learning rate (AdamW).")
@click.option("--warmup-ratio", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="Share of steps spent warming the learning rate up linearly.")
@click.option("--weight-decay", default=0.01, show_default=True, type=float,
              help="AdamW weight decay.")
@click.option("--grad-clip", default=1.0, show_default=True, type=float,
              help="Clip the gradient norm to this value.")
@click.option("--temperature", default=0.07, show_default=True, type=float,
              help="InfoNCE softmax temperature.")
@click.option("--max-seq-length", default=256, show_default=True, type=click.IntRange(1),
              help="Tokens per note (up to the model's maximum).")
@click.option("--prompt", metavar="NAME",
              help="A prompt of the model (e.g. document) prepended to every note; evaluate "
                   "with the same --prompt.")
@click.option("--distinct-patients/--mixed-patients", default=True, show_default=True,
              help="Keep pairs of one patient out of the same batch (no false negatives).")
@click.option("--gradient-checkpointing", is_flag=True,
              help="Recompute activations in the backward pass: less memory, slower.")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(["auto", "fp32", "bf16"]),
              help="auto: bf16 autocast on GPU, fp32 on CPU (fp16 is never used).")
@click.option("--max-steps", default=0, show_default=True, type=click.IntRange(0),
              help="Stop after this many steps (0: all epochs).")
@click.option("--checkpoint-every", default=0, show_default=True, type=click.IntRange(0),
              help="Also checkpoint every N steps (always at each epoch end).")
@click.option("--max-train-pairs", default=0, show_default=True, type=click.IntRange(0),
              help="Train on a seeded sample of this many pairs (0: all).")
@click.option("--val-max-pairs", default=2000, show_default=True, type=click.IntRange(2),
              help="Validation pairs scored after each epoch (a sample, for speed).")
@click.option("--eval-every", default=0, show_default=True, type=click.IntRange(0),
              help="Also score validation every N steps: a loss/recall curve in "
              "training.json, and model/ is the best point of it.")
@click.option("--augment", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Re-tell both notes of each pair at random every step (drop/reorder "
              "sentences, later start, typos, case), 0..1: against learning the corpus's "
              "templates instead of the patient.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the shuffling and initialisation.")
@click.option("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from checkpoint/.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print training.json.")
def train_cmd(model, data, out, loss, epochs, batch_size, mini_batch_size, lr, warmup_ratio,
              weight_decay, grad_clip, temperature, max_seq_length, prompt, distinct_patients,
              gradient_checkpointing, precision, max_steps, checkpoint_every, max_train_pairs,
              val_max_pairs, eval_every, augment, seed, device, resume, no_progress, as_json):
    """Fine-tune MODEL (sentence-transformers dir or hub id) so that a note's nearest neighbour
    is the patient's next note."""
    trainer = import_stage("mimicsearch.train.trainer", "train")
    try:
        config = trainer.TrainConfig(
            model=model, data=data, out=out, loss=loss, temperature=temperature, epochs=epochs,
            batch_size=batch_size, mini_batch_size=mini_batch_size, lr=lr,
            weight_decay=weight_decay, warmup_ratio=warmup_ratio, grad_clip=grad_clip,
            max_seq_length=max_seq_length, prompt=prompt, distinct_patients=distinct_patients,
            gradient_checkpointing=gradient_checkpointing, precision=precision,
            max_steps=max_steps, max_train_pairs=max_train_pairs, val_max_pairs=val_max_pairs,
            checkpoint_every=checkpoint_every, eval_every=eval_every, augment=augment,
            seed=seed, device=device,
            progress=not no_progress)
        report = trainer.train(config, resume=resume)
    except _ERRORS as e:
        raise fail(e) from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    steps = report["steps"]
    click.echo(f"{out}/model: {steps} step{'' if steps == 1 else 's'} on "
               f"{report['train_pairs']} training pairs")
    click.echo(f"{'epoch':>5} {'loss':>8} {'val R@1':>8} {'val R@5':>8} {'val R@10':>9}")
    for e in report["history"]:
        v = e.get("val", {})
        click.echo(f"{e['epoch']:5d} {_num(e['loss'], 8)} {_num(v.get('recall@1_excluded'), 8)} "
                   f"{_num(v.get('recall@5_excluded'), 8)} {_num(v.get('recall@10_excluded'), 9)}"
                   + ("  best" if e.get("best") else "") + ("  (partial)" if e.get("partial")
                                                            else ""))
    if report.get("curve"):
        click.echo(f"{'step':>5} {'loss':>8} {'val R@1':>8} {'val R@5':>8} {'val R@10':>9}")
        for c in report["curve"]:
            v = c.get("val") or {}
            click.echo(f"{c['step']:5d} {_num(c['loss'], 8)} "
                       f"{_num(v.get('recall@1_excluded'), 8)} "
                       f"{_num(v.get('recall@5_excluded'), 8)} "
                       f"{_num(v.get('recall@10_excluded'), 9)}" + ("  best" if c.get("best")
                                                                    else ""))


@click.command("evaluate")
@click.argument("model")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="Pairs directory (mimicsearch pairs).")
@click.option("--base", help="Base model to compare against, side by side.")
@click.option("--out", type=click.Path(dir_okay=False),
              help="metrics.json path (default: inside MODEL if a directory, else ./).")
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["test", "val", "train"]),
              help="Which patients to evaluate on (test: never seen in training).")
@click.option("--max-seq-length", type=click.IntRange(1),
              help="Truncate notes to this many tokens (default: each model's own).")
@click.option("--prompt", metavar="NAME",
              help="A prompt of the model prepended to every note (as in training).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1),
              help="Texts encoded together.")
@click.option("--device", help="cpu, cuda ... (default: cuda if available).")
@click.option("--fusion-data", type=click.Path(exists=True, file_okay=False),
              help="Pairs directory whose validation split chooses the hybrid's fusion "
              "(default: --data). Give the training corpus's when --data is a transfer "
              "corpus: nothing may be tuned on that.")
@click.option("--precision", "variant_precision", type=click.Choice(["fp32", "int8", "int4"]),
              help="Exported MODEL (and --base): the variant to measure (default: the one "
              "encode would use), e.g. int8 beside fp32.")
@click.option("--runtime", type=click.Choice(["onnxruntime", "openvino"]),
              help="Exported MODEL (and --base): the variant's runtime.")
@click.option("--no-retrievers", is_flag=True, help="Only the models' own metrics: no BM25, "
              "hybrid or patient-search rows.")
@click.option("--no-patients", is_flag=True, help="No patient-search measure (the slowest "
              "part: every note of every held-out patient is a query).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json.")
def evaluate_cmd(model, data, base, out, split, max_seq_length, prompt, batch_size, device,
                 fusion_data, variant_precision, runtime, no_retrievers, no_patients,
                 no_progress, as_json):
    """Evaluate MODEL (sentence-transformers or exported ONNX dir) on held-out patients:
    next-note recall@k, diagnosis AUROC, silhouettes; writes metrics.json.

    \b
    Beside the models, on the same pairs: BM25 (the index's own lexical scoring), and each
    model's hybrid with BM25, its fusion chosen on the validation split (every setting
    tried is in metrics.json); both recall protocols (excluded: the query note and copies
    of its text are not candidates; seed: nothing excluded) and the candidate pool. Then
    patient search: diagnosis chapter overlap of each held-out patient with its 10 most
    similar patients, against random and BM25, with 95% intervals.
    """
    evaluation = import_stage("mimicsearch.train.evaluate", "train")
    try:
        result = evaluation.evaluate(model, data, base=base, out=out, split=split,
                                     device=device, max_seq_length=max_seq_length,
                                     batch_size=batch_size, show_progress=not no_progress,
                                     prompt=prompt, retrievers=not no_retrievers,
                                     patients=not no_patients, fusion_data=fusion_data,
                                     precision=variant_precision, runtime=runtime)
    except _ERRORS as e:
        raise fail(e) from None
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['split']} split of {data} -> {result['out']}")
    click.echo(f"{'metric':24} {'base':>10} {'model':>10} {'delta':>9}")
    for name, b, m in evaluation.comparison_rows(result):
        delta = m - b if isinstance(m, float) and isinstance(b, float) else None
        click.echo(f"{name:24} {_num(b, 10)} {_num(m, 10)} {_num(delta, 9, signed=True)}")
    if "retrieval" in result:
        _retrieval_table(result["retrieval"])


def _retrieval_table(r: dict) -> None:
    pool = r["pool"]
    click.echo(f"\nnext-note recall, {pool['pairs']} queries over {pool['corpus']} candidate "
               "notes (excluded: query note and copies of its text left out; seed: none)")
    click.echo(f"{'retriever':16} {'R@1':>7} {'R@5':>7} {'R@10':>7}   {'seed R@5':>8} "
               f"{'seed R@10':>9}")
    for name, m in r["recall"].items():
        click.echo(f"{name:16} {_num(m['recall@1_excluded'], 7)} {_num(m['recall@5_excluded'], 7)}"
                   f" {_num(m['recall@10_excluded'], 7)}   {_num(m.get('recall@5_seed'), 8)} "
                   f"{_num(m.get('recall@10_seed'), 9)}")
    for role, t in r["fusion"].items():
        c = t["chosen"]
        click.echo(f"hybrid({role}) fusion chosen on val: {c['method']}"
                   + (f" k={c['k']}" if c["method"] == "rrf" else "")
                   + f", weights dense {c['dense_weight']:g} / lexical {c['lexical_weight']:g}"
                   f", depth {c['depth']} (of {len(t['tried'])} tried)")
    for role, a in r.get("auto", {}).items():
        ci = {k: a["auto"][f"recall@{k}"]["ci95"] for k in (5, 10)}
        on_all = {k: a["on_all"][f"recall@{k}"]["mean"] for k in (5, 10)}
        click.echo(f"auto({role}): held out ({a['folds']} folds of patients, each chosen "
                   f"on the rest: {', '.join(a['chosen_per_fold'])}), R@5 95% "
                   f"[{ci[5][0]:.4f}, {ci[5][1]:.4f}], R@10 [{ci[10][0]:.4f}, "
                   f"{ci[10][1]:.4f}]; chosen on all these pairs, as an index of these notes "
                   f"would: {a['chosen_on_all']}, R@5 {on_all[5]:.4f}, R@10 {on_all[10]:.4f}")
    if "patients" in r:
        p = r["patients"]
        click.echo(f"\npatient search, {p['patients']} held-out patients: diagnosis chapter "
                   f"overlap with the top {p['k']} (Jaccard, 95% interval)")
        for name, v in p.items():
            if isinstance(v, dict) and "ci95" in v:
                lo, hi = v["ci95"]
                click.echo(f"{name:16} {v['mean']:.4f}  [{lo:.4f}, {hi:.4f}]")
        for role, a in p.get("auto", {}).items():
            lo, hi = a["vs_lexical"]["ci95"]
            click.echo(f"auto({role}) held out ({a['folds']} folds, each chosen on the "
                       f"rest: {', '.join(a['chosen_per_fold'])}) minus bm25: "
                       f"{a['vs_lexical']['mean']:+.4f} [{lo:+.4f}, {hi:+.4f}]; chosen on "
                       f"all: {a['chosen_on_all']}, {a['on_all']['mean']:.4f}, minus bm25 "
                       f"{a['on_all_vs_lexical']['mean']:+.4f}")


def _num(x, width: int, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return f"{'-':>{width}}"
    if isinstance(x, int):
        return f"{x:{width}d}"
    return f"{x:{'+' if signed else ''}{width}.4f}"


COMMANDS: list = [pairs_cmd, train_cmd, evaluate_cmd]
