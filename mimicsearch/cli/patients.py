"""CLI command: patients (patient search, and a cohort file from it)."""
from __future__ import annotations

from pathlib import Path

import click

from .. import cohort as cohorts
from ..index.loaded import MAX_K
from ..search import Filters, Searcher
from ._errors import EXPECTED
from ._errors import fail as _fail
from .index import _clip, _echo_json, _fusion, _mode_options, _split_ids, resolved


@click.command("patients")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("text", required=False)
@click.option("--note-id", help="Patients like the one this stored note describes.")
@click.option("--subject", "subject_id", help="Patients like this SUBJECT_ID (all its notes "
              "are the query).")
@click.option("-k", "k", type=click.IntRange(1, MAX_K), default=10, show_default=True,
              help="Patients to return.")
@click.option("--category", multiple=True,
              help="Only notes of this CATEGORY count, any case (repeatable).")
@click.option("--since", metavar="DATE", help="Only notes on or after DATE count.")
@click.option("--until", metavar="DATE", help="Only notes on or before DATE count.")
@click.option("--date-col", default=None,
              help="The date column --since/--until read (default: the index's time role: "
              "CHARTDATE, charttime, note_date, or --columns time=).")
@click.option("--where", "where", multiple=True, metavar="COL<op>VALUE",
              help="A condition on any stored column, as for `query` (repeatable).")
@_mode_options
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the patients as a cohort file, .csv or .parquet: a row per "
              "patient (rank, score, notes, admissions, first/last date, categories, its "
              "best notes' ids) that records this request, the index's fingerprint and the "
              "time.")
@click.option("--select", "select", multiple=True, metavar="SUBJECT_IDS",
              help="With --out: only these of the patients returned (comma-separated or "
              "repeated); one not returned is an error.")
@click.option("--name", "cohort_name", default=None, help="With --out: the cohort's name.")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False,
              path_type=Path), help="Model directory (default: the one the index was built with).")
@click.option("--no-verify", is_flag=True, help="Skip hashing the index files.")
@click.option("--json", "as_json", is_flag=True, help="Patients as JSON.")
def patients_cmd(index_dir, text, note_id, subject_id, k, category, since, until, date_col,
                 where, mode, fusion, rrf_k, weights, depth, out_path, select, cohort_name,
                 model_dir, no_verify, as_json):
    """Patients like a query TEXT, a stored note (--note-id) or a patient (--subject),
    best first; the query's own patient never comes back.

    auto (default): the setting chosen on this index's own patients by their diagnoses
    (`build-index --diagnoses`), else lexical; `info` shows which.

    dense: the cosine between the query's vector and each patient's vector, the
    mean of every stored row of its notes (a --subject query is its own such vector). On
    an index built with --long windows every part of a long note counts; on held-out
    patients like the model's training notes that beat lexical, on unlike ones lexical
    led (BENCHMARKS.md, "Patient search").

    lexical: BM25 with each patient's notes as one document, for the distinct words of the
    text, the note or the patient's whole history (stemmed, stopwords out); a patient
    whose notes share no word with the query is not returned. hybrid: the two patient
    rankings fused (--fusion, --weights, --rrf-k, --depth as for `query`); --fusion
    weighted --weights 0.5,1 measured best of those tried.

    Filters choose the notes candidate patients are judged by; the query patient's own
    notes are all used. Each patient shows its best notes for the query, its admissions
    and the dates its judged notes span.

    \b
    Examples:
      mimicsearch patients index/ --subject 4312 --mode hybrid
      mimicsearch patients index/ "new onset atrial fibrillation on warfarin" -k 20
      mimicsearch patients index/ "sepsis on vasopressors" -k 50 --out sepsis.parquet
    """
    if sum(x is not None for x in (text, note_id, subject_id)) != 1:
        raise click.UsageError("give exactly one of TEXT, --note-id or --subject")
    if (select or cohort_name) and out_path is None:
        raise click.UsageError("--select and --name apply to a cohort file: add --out "
                               "FILE.csv or FILE.parquet")
    filters = Filters(categories=category, since=since, until=until, where=where,
                      date_col=date_col)
    try:
        fmt = cohorts.format_of(out_path) if out_path is not None else None
        overrides = _fusion(mode, fusion, rrf_k, weights, depth)
        s = Searcher(index_dir, model_dir, verify=not no_verify)
        mode, fused = resolved(s, mode, overrides, patients=True)
        patients = s.similar_patients(text, note_id=note_id, subject_id=subject_id, k=k,
                                      filters=filters, mode=mode, fusion=fused)
        if out_path is not None:
            cohort = cohorts.build(patients, query={"text": text, "note_id": note_id,
                                                    "subject_id": subject_id},
                                   mode=mode, fusion=fused, filters=filters, k=k,
                                   index=s.fingerprint, select=_split_ids(select) or None,
                                   name=cohort_name)
            cohorts.write(cohort, out_path, fmt)
    except EXPECTED as e:
        raise _fail(e) from None
    if as_json:
        _echo_json({"query": {"text": text, "note_id": note_id, "subject_id": subject_id},
                    "mode": mode, "fusion": None if fused is None else fused.to_dict(),
                    "patients": [p.to_dict() for p in patients],
                    **({"cohort": {"path": str(out_path), "format": fmt,
                                   "patients": cohort.num_rows}} if out_path else {})})
        return
    if not patients:
        click.echo("(no patients)")
    else:
        head = ("#", "subject", "score", "notes", "admissions", "span", "best notes",
                "snippet")
        rows = [(str(p.rank), str(p.subject), f"{p.score:.4f}", str(p.notes),
                 str(len(p.admissions)), _span(p), ",".join(str(m.id) for m in p.matches),
                 _clip(p.best.snippet, 50)) for p in patients]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for r in [head, *rows]:
            click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if out_path is not None:
        click.echo(f"wrote {cohort.num_rows} patients to {out_path} ({fmt})", err=True)


def _span(p) -> str:
    if p.first_date is None:
        return "-"
    return str(p.first_date) if p.first_date == p.last_date else \
        f"{p.first_date}..{p.last_date}"


COMMANDS: list = [patients_cmd]
