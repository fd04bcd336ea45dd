"""CLI command: calibrate."""
from __future__ import annotations

from pathlib import Path

import click

from ..calibrate import calibrate_index
from ..diagnoses import attach
from ._errors import EXPECTED
from ._errors import fail as _fail
from .index import _echo_json, calibration_line


@click.command("calibrate")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--diagnoses", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A MIMIC-III DIAGNOSES_ICD or MIMIC-IV diagnoses_icd file to keep with the "
              "index first, so patient search is calibrated too (by diagnosis chapter "
              "overlap@10; ICD-9 and ICD-10).")
@click.option("--seed", type=int, default=None,
              help="Seed of the sample (default: the last calibration's, else 0).")
@click.option("--pairs", type=click.IntRange(min=20), default=1000, show_default=True,
              help="Next-note pairs to measure: each costs a dense and a whole-note BM25 "
              "search (BENCHMARKS \"Calibration\" times it); fewer is faster and noisier.")
@click.option("--table", "show_table", is_flag=True, help="Print every setting measured.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def calibrate_cmd(index_dir, diagnoses, seed, pairs, show_table, no_progress, as_json):
    """Choose the search setting `--mode auto` uses, on the index's own notes.

    Each patient's consecutive notes are next-note pairs: up to 1,000 of them from
    up to 300 patients are searched as `query --note-id` searches (the anchor
    and copies of its text left out), and recall@5 and @10 of the next note measured for
    the model, BM25, RRF over k and weights, and convex sums of min-max and z-scored
    scores. The simplest setting within one bootstrap standard error of the best wins.
    The record (every setting's numbers) goes into the manifest; `info` shows it.
    build-index calibrates; add and sync calibrate again once more than
    20% of the notes changed. With diagnoses kept (here or `build-index --diagnoses`),
    patient search is chosen the same way on up to 300 patients, by the diagnosis chapter
    overlap of their 10 most similar patients; lexical stands unless beaten by more
    than noise.

    \b
      mimicsearch calibrate index/ --table
      mimicsearch calibrate index/ --diagnoses DIAGNOSES_ICD.csv --json
    """
    try:
        if diagnoses is not None:
            attach(index_dir, diagnoses)
        if seed is None:
            from ..index import IndexManifest

            c = IndexManifest.load(index_dir).calibration
            seed = c.seed if c else 0
        record = calibrate_index(index_dir, seed=seed, progress=not no_progress, pairs=pairs)
    except EXPECTED as e:
        raise _fail(e) from None
    if as_json:
        _echo_json({"command": "calibrate", "index_dir": str(index_dir), **record.to_dict()})
        return
    click.echo(calibration_line(record.to_dict()) + f" [{record.seconds:.1f} s]")
    if show_table and record.table:
        click.echo(f"{'setting':34} {'R@5':>6} {'R@10':>6} {'score':>6}  {'95% CI':>15}")
        for r in record.table:
            mark = " <- auto" if r["chosen"] else " (best)" if r["best"] else ""
            click.echo(f"{r['label']:34} {r['recall@5']:6.3f} {r['recall@10']:6.3f} "
                       f"{r['score']:6.3f}  [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]{mark}")
    ps = record.patient_search
    if ps:
        row = next((r for r in ps.get("table", []) if r["chosen"]), None)
        click.echo(f"patients: auto: {ps['chosen']['label']}" + (
            f", {ps['measure']} {row['score']:.3f} on {ps['patients']} patients" if row
            else f" ({ps.get('reason')})"))


COMMANDS: list = [calibrate_cmd]
