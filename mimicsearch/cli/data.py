"""CLI commands: data."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ._errors import fail


@click.command("synth")
@click.option("--patients", type=click.IntRange(min=1), default=500, show_default=True,
              help="Number of synthetic patients (each has 1-3 admissions, ~35 notes each).")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, writable=True, path_type=Path),
              help="Directory to write NOTEEVENTS.csv and DIAGNOSES_ICD.csv into (created).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed; the same seed and --patients give byte-identical files.")
@click.option("--style", type=click.Choice(["standard", "transfer"]), default="standard",
              show_default=True, help="transfer: a corpus written independently of the "
              "standard one (own vocabulary, layouts, abbreviations, typos, lengths) to test "
              "whether a fine-tune transfers; never train or tune on it.")
@click.option("--layout", type=click.Choice(["mimic-iii", "mimic-iv", "omop"]),
              default="mimic-iii", show_default=True,
              help="The note table's layout: mimic-iii (NOTEEVENTS.csv, DIAGNOSES_ICD.csv), "
              "mimic-iv (MIMIC-IV-Note's discharge.csv.gz and radiology.csv.gz: discharge "
              "summaries, their addenda and radiology reports only, as the release holds; "
              "diagnoses_icd.csv.gz with ICD-9 and ICD-10 codes) or omop (CDM v5.4 NOTE.csv). "
              "The same patients and texts in each.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def synth(patients: int, out_dir: Path, seed: int, style: str, layout: str, progress: bool,
          as_json: bool) -> None:
    """Write a synthetic MIMIC-III corpus shaped like the real one.

    NOTEEVENTS.csv and DIAGNOSES_ICD.csv get MIMIC-III v1.4's exact columns. Each patient has a
    clinical story (admissions, real ICD-9 codes, medications, labs, procedures, devices) that
    recurs across their notes; note categories follow MIMIC's proportions and styles, with its
    quirks ([**...**] placeholders, 2100s dates, missing CHARTTIME/HADM_ID, ISERROR rows).

    \b
    Examples:
      mimicsearch synth --patients 500 --out data/ --seed 0
      mimicsearch synth --patients 500 --out transfer/ --style transfer
      mimicsearch synth --patients 500 --out mimic4/ --layout mimic-iv
      mimicsearch synth --patients 500 --out omop/ --layout omop
    """
    from mimicsearch.synth.layouts import write_layout

    start = time.perf_counter()
    try:
        summary, files = write_layout(patients, out_dir, layout, seed=seed, style=style,
                                      progress=progress)
    except (ValueError, OSError) as e:
        raise fail(e) from None
    seconds = time.perf_counter() - start
    if as_json:
        click.echo(json.dumps({**summary.to_dict(), "layout": layout,
                               "files": [str(f) for f in files],
                               "seconds": round(seconds, 3)}, indent=2))
        return
    drawn = "" if layout == "mimic-iii" else f" (drawn as MIMIC-III, written as {layout})"
    click.echo(f"wrote {summary.notes:,} notes and {summary.diagnoses:,} diagnoses for "
               f"{summary.patients:,} patients ({summary.admissions:,} admissions){drawn} "
               f"in {seconds:.1f}s")
    click.echo("\n".join(f"  {f}" for f in files))
    if layout != "mimic-iii":
        return
    width = max(len(k) for k in summary.notes_by_category)
    for category, n in summary.notes_by_category.items():
        click.echo(f"  {category.strip():<{width}}  {n:>9,}  {n / max(summary.notes, 1):6.1%}")


COMMANDS: list = [synth]
