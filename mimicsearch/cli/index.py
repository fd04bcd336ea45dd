"""CLI commands: build-index, query, add, sync, remove, compact, ids, info."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .. import index as ix
from ..calibrate import RECALIBRATE_SHARE
from ..fusion import AUTO, METHODS, MODES
from ..index.loaded import MAX_K
from ..options import EncodeOptions
from ..pipeline import IndexSummary, add_notes, build_index_from, sync_notes
from ..readers import FILE_FORMATS
from ..schema import COLUMNS_HELP
from ..search import Filters, Searcher
from ._errors import EXPECTED
from ._errors import fail as _fail
from ._extras import import_stage

NOTES_HELP = ("a notes file (CSV/TSV/JSONL, optionally .gz, or Parquet) or an embeddings "
              "directory")


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _report(s: IndexSummary, as_json: bool, extra: dict | None = None) -> None:
    """One summary for build-index, add and sync: read = encoded + rejected + unchanged."""
    for w in s.warnings:
        click.echo(f"warning: {w}", err=True)
    if as_json:
        _echo_json({**s.to_dict(), **(extra or {})})
        return
    if s.read:
        click.echo(f"read {s.read} rows: {s.encoded} encoded, {s.rejected} rejected"
                   + (f", {s.unchanged} unchanged" if s.command == "sync" else "")
                   + f", {s.truncated} truncated"
                   + (f" (rejects: {s.rejects_file})" if s.rejects_file else ""))
    changes = f"{s.added} added"
    if s.command == "sync":
        changes += f", {s.edited} edited, {s.removed} removed" + (
            f", {s.absent} not in the snapshot (kept; --remove-missing removes them)"
            if s.absent else "")
    click.echo(f"{s.command} {s.index_dir}: {changes}; {s.live_notes} live notes, "
               f"{s.shards} shard(s)")
    if s.calibrated and s.command != "build-index":  # build-index prints the whole line
        click.echo(f"calibrated again (more than {RECALIBRATE_SHARE:.0%} of the notes changed "
                   f"since the last time): auto is {s.calibrated['label']}")


@click.command("build-index")
@click.argument("input_path", metavar="NOTES...", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False,
              path_type=Path), help="Exported model directory (needed when NOTES are notes).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Index directory to create.")
@click.option("--memory", default=None, metavar="SIZE",
              help="RAM budget for the index, e.g. 8G (default: half of this machine's RAM).")
@click.option("--index-key", default=None, help="Any faiss factory string, e.g. "
              "'IVF4096,Flat', overriding the automatic choice.")
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help="Vectors per shard (default: one shard).")
@click.option("--merge-on-disk", is_flag=True,
              help="IVF only: merge the shards into one memory-mapped on-disk index.")
@click.option("--recall-target", type=click.FloatRange(0, 1, min_open=True), default=0.95,
              show_default=True, help="Tune nprobe/efSearch to reach this recall@10.")
@click.option("--columns", metavar="ROLE=COL,…", help=COLUMNS_HELP)
@click.option("--text-col", default=None, help="Text column (same as --columns text=COL).")
@click.option("--id-col", default=None, help="Note id column (same as --columns id=COL).")
@click.option("--format", "input_format", type=click.Choice(FILE_FORMATS),
              help="Format of NOTES (default: from the file name; .gz is read compressed).")
@click.option("--keep", multiple=True, help="Metadata column to store and filter on "
              "(repeatable; default: every role's column).")
@click.option("--dim", type=int, default=None, help="Matryoshka dimension to index.")
@click.option("--long", "long_mode", type=click.Choice(["truncate", "chunk", "windows"]),
              default="truncate", show_default=True,
              help="Notes longer than the model's limit: truncate, mean of windows (chunk), "
              "or one vector per window (windows; hits show each note once).")
@click.option("--precision", type=click.Choice(["fp32", "int8", "int4"]), help="Model "
              "variant (default: the int8 one the export measured fastest that passed parity, "
              "else fp32).")
@click.option("--runtime", type=click.Choice(["onnxruntime", "openvino"]),
              help="Runtime of the model variant: openvino runs the export's openvino-int8 "
              "(the [openvino] extra; default: the variant the export measured fastest).")
@click.option("--no-full-text", is_flag=True, help="Keep only each note's 200-character "
              "opening in the index, not its whole text (`serve` then shows openings only).")
@click.option("--no-lexical", is_flag=True, help="No BM25 part: `query --mode lexical` and "
              "`--mode hybrid` will be refused (default: BM25 over every note's whole text, "
              "in segments that add/sync extend and `compact` merges; needs the whole "
              "texts).")
@click.option("--diagnoses", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A diagnoses file, MIMIC-III DIAGNOSES_ICD (SUBJECT_ID, HADM_ID, "
              "ICD9_CODE) or MIMIC-IV diagnoses_icd(.csv.gz) (subject_id, hadm_id, icd_code, "
              "icd_version 9 or 10): its chapters (both revisions in one scheme) are kept "
              "per admission, and `patients --mode auto` is then chosen on this index's own "
              "patients by them.")
@click.option("--no-calibrate", is_flag=True, help="Do not measure the search settings on "
              "the index's own notes (`--mode auto` then uses equal-weight RRF until "
              "`mimicsearch calibrate`).")
@click.option("--threads", type=int, default=None, help="Encoder threads.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the training sample, the recall measurement and the "
              "calibration's sample.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local",
              show_default=True, help="spark: encode and build shards on Spark executors, "
              "train and measure on the driver (the [spark] extra).")
@click.option("--master", help="Spark master URL with --engine spark (default: spark-submit's, "
              "else local[*]).")
def build_index_cmd(input_path, model_dir, out_dir, memory, index_key, shard_size,
                    merge_on_disk, recall_target, columns, text_col, id_col, input_format,
                    keep, dim,
                    long_mode, precision, runtime, no_full_text, no_lexical, diagnoses,
                    no_calibrate, threads, seed, no_progress, as_json, engine, master):
    """Build a search index from NOTES: one or more note tables (encoded with --model) or an
    embeddings directory. Rejected rows are listed in OUT/embeddings/rejects.csv.

    The layout is detected from the columns: MIMIC-III NOTEEVENTS.csv, MIMIC-IV-Note
    (`build-index discharge.csv.gz radiology.csv.gz --diagnoses diagnoses_icd.csv.gz`),
    OMOP NOTE; any other table with --columns (e.g. --columns
    id=nid,subject=pt,time=written_at,category=kind,text=body). Patients, dates,
    categories, calibration and patient search then work on every layout.

    Then the index calibrates itself: on next-note pairs of its own patients it measures
    the model, BM25 and their fusions, and `query --mode auto` (the default) uses the one
    it chose (`mimicsearch calibrate` tells more)."""
    if engine == "spark":
        import_stage("mimicsearch.spark", "spark")
    elif master:
        raise click.UsageError("--master needs --engine spark")
    try:
        budget = ix.parse_bytes(memory) if memory else ix.default_memory_budget()
        s = build_index_from(
            list(input_path), out_dir=out_dir, model_dir=model_dir,
            encode=EncodeOptions(text_col=text_col, id_col=id_col, columns=columns,
                                 input_format=input_format,
                                 keep=tuple(keep) or None,
                                 dim=dim, long=long_mode, precision=precision,
                                 runtime=runtime, snippets=True,
                                 full_text=not no_full_text),
            build=ix.BuildOptions(memory_bytes=budget, index_key=index_key,
                                  shard_size=shard_size, merge=merge_on_disk,
                                  recall_target=recall_target, seed=seed,
                                  lexical=not no_lexical),
            engine=engine, threads=threads, progress=not no_progress, master=master,
            calibrate=not no_calibrate, diagnoses=diagnoses)
        m = ix.IndexManifest.load(out_dir)
    except EXPECTED as e:
        raise _fail(e) from None
    q = m.quality
    _report(s, as_json, {"index_key": m.index_key, "dimension": m.dimension,
                         "model_fingerprint": m.model_fingerprint,
                         "quality": q.to_dict() if q else None})
    if as_json:
        return
    click.echo(f"index: {m.index_key}, dim {m.dimension} ({m.build.reason})")
    if q:
        if m.lexical:
            click.echo(f"lexical: BM25 over {m.lexical.documents} whole notes "
                       "(query --mode lexical|hybrid)")
        click.echo(f"recall@{q.k} {q.recall_at_10:.3f} (target {q.recall_target}"
                   f"{'' if q.target_met else ', NOT met'}) at {q.search_params or 'exact'}, "
                   f"{q.ms_per_query:.2f} ms/query")
    if m.calibration is not None:
        click.echo(calibration_line(m.calibration.to_dict()))


def calibration_line(c: dict) -> str:
    """One line: what mode "auto" runs and what it measured."""
    if c.get("reason"):
        return f"auto: {c['chosen']['label']} ({c['reason']})"
    row = next(r for r in c["table"] if r["chosen"])
    best = {m: next(r for r in c["table"] if r["mode"] == m) for m in ("dense", "lexical")}
    return (f"auto: {row['label']}, next-note R@5 {row['recall@5']:.3f} R@10 "
            f"{row['recall@10']:.3f} on {c['pairs']} pairs of {c['patients']} patients "
            f"(dense {best['dense']['recall@10']:.3f}, lexical "
            f"{best['lexical']['recall@10']:.3f} at R@10)")


def _split_ids(values: tuple[str, ...]) -> list[str]:
    return [v for chunk in values for v in chunk.replace(",", " ").split() if v]


def _mode_options(fn):
    """--mode and the hybrid fusion settings, shared by `query` and `patients`."""
    for option in reversed([
        click.option("--mode", type=click.Choice((AUTO, *MODES)), default=AUTO,
                     show_default=True,
                     help="auto: the setting this index chose on its own notes (`info` "
                     "shows it); dense: the model; lexical: BM25 over whole notes; hybrid: "
                     "both, fused."),
        click.option("--fusion", type=click.Choice(METHODS), default=None,
                     help="Hybrid: rrf: sum of weight/(k + rank); weighted: sum of weight x "
                     "min-max scaled score; zscore: the same over standardised scores "
                     "(default: the fusion the index measured best, else rrf)."),
        click.option("--rrf-k", type=click.IntRange(min=1), default=None,
                     help="Hybrid rrf: the constant k (default 60)."),
        click.option("--weights", metavar="DENSE,LEXICAL", default=None,
                     help="Hybrid: the retrievers' weights, e.g. 1,0.5."),
        click.option("--depth", type=click.IntRange(min=1), default=None,
                     help="Hybrid: candidates taken from each retriever (default 100)."),
    ]):
        fn = option(fn)
    return fn


def _fusion(mode: str, method, rrf_k, weights, depth) -> dict:
    """The fusion settings given (the rest come from the index: `Searcher.fusion_for`);
    giving any with --mode auto asks for a hybrid."""
    given = [n for n, v in (("--fusion", method), ("--rrf-k", rrf_k), ("--weights", weights),
                            ("--depth", depth)) if v is not None]
    if mode not in ("hybrid", AUTO):
        if given:
            raise click.UsageError(f"{', '.join(given)} apply only to --mode hybrid (or "
                                   "auto, which they turn into a hybrid)")
        return {}
    out: dict = {}
    if weights is not None:
        try:
            w = tuple(float(x) for x in weights.split(","))
            if len(w) != 2:
                raise ValueError
        except ValueError:
            raise click.BadParameter(f"{weights!r}: give two numbers, DENSE,LEXICAL "
                                     "(e.g. 1,0.5)", param_hint="--weights") from None
        out |= {"dense_weight": w[0], "lexical_weight": w[1]}
    if rrf_k is not None:
        if method not in (None, "rrf"):
            raise click.UsageError("--rrf-k applies to --fusion rrf only")
        out |= {"method": "rrf", "k": rrf_k}
    if method is not None:
        out["method"] = method
    if depth is not None:
        out["depth"] = depth
    return out


def resolved(s: Searcher, mode: str, overrides: dict, patients: bool = False):
    """(mode, fusion) a command runs: auto resolved, the fusion completed from the index's
    own. Raises ValueError for a mode or fusion setting the index cannot take."""
    return s.resolve(mode, s.fusion_for(**overrides) if overrides else None, patients)


def explain_line(s: Searcher, mode: str, fusion, patients: bool = False) -> str:
    label = mode if fusion is None else f"hybrid {fusion.label}"
    a = s.describe_auto(patients)
    if a["label"] != label:
        return f"mode: {label}"
    if not a["calibrated"]:
        return f"mode: auto -> {label} ({a['why']})"
    measured = (f"measured R@5 {a['recall@5']:.3f} R@10 {a['recall@10']:.3f} on {a['pairs']} "
                "next-note pairs" if not patients else
                f"measured {a['measure']} {a['score']:.3f} on {a['patients']} patients")
    return f"mode: auto -> {label} ({measured})"


@click.command("query")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("text", required=False)
@click.option("--file", "query_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Queries, one per line.")
@click.option("--note-id", "note_ids", multiple=True,
              help="Use a stored note as the query (repeatable).")
@click.option("-k", "k", type=click.IntRange(1, MAX_K), default=10, show_default=True,
              help=f"Hits per query (at most {MAX_K}; fewer where the index holds fewer).")
@click.option("--subject", multiple=True, help="Only notes of this SUBJECT_ID (repeatable).")
@click.option("--category", multiple=True,
              help="Only notes of this CATEGORY, any case (repeatable).")
@click.option("--since", metavar="DATE", help="Only notes on or after DATE (YYYY-MM-DD) in "
              "--date-col.")
@click.option("--until", metavar="DATE", help="Only notes on or before DATE (YYYY-MM-DD).")
@click.option("--date-col", default=None,
              help="The date column --since/--until read (default: the index's time role: "
              "CHARTDATE, charttime, note_date, or --columns time=).")
@click.option("--where", "where", multiple=True, metavar="COL<op>VALUE",
              help="A condition on any stored column (repeatable, all must hold): "
              "HADM_ID=134690, CATEGORY=ECG,Echo (any of), DESCRIPTION!=Report, "
              "CHARTDATE>=2150-01-01; ops = != >= <= > <. `info` lists the columns.")
@click.option("--exclude-subject", is_flag=True,
              help="With --note-id: leave out all notes of the query note's patient.")
@_mode_options
@click.option("--explain", is_flag=True, help="Show each retriever's rank and score per hit "
              "(--json always carries them, as `retrievers`).")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False,
              path_type=Path), help="Model directory (default: the one the index was built with).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Queries encoded together.")
@click.option("--no-verify", is_flag=True, help="Skip hashing the index files against the "
              "manifest (about 1 s/GB; for large indexes you trust).")
@click.option("--json", "as_json", is_flag=True, help="Hits as JSON.")
def query_cmd(index_dir, text, query_file, note_ids, k, subject, category, since, until,
              date_col, where, exclude_subject, mode, fusion, rrf_k, weights, depth, explain,
              model_dir, batch_size, no_verify, as_json):
    """Search an index with a text, a file of texts (--file) or stored notes (--note-id).

    \b
    Modes: auto (the default: the setting the index chose by measuring its own next-note
    pairs, shown by `info` and --explain), dense (the model's vectors), lexical (BM25 over
    whole notes: exact drug names, devices, lab values), hybrid (both, fused: the fusion
    the index measured best unless told).
    Filters apply in every mode. A filter naming a column, category or patient the index
    does not hold is an error that lists the valid ones.

    \b
    Examples:
      mimicsearch query index/ "heparin drip for PE" --mode hybrid --explain
      mimicsearch query index/ --note-id 1234 --exclude-subject --mode lexical
      mimicsearch query index/ "HCT 24" --mode hybrid --fusion weighted --weights 1,0.5
    """
    given = sum(bool(x) for x in (text, query_file, note_ids))
    if given != 1:
        raise click.UsageError("give exactly one of TEXT, --file or --note-id")
    if exclude_subject and not note_ids:
        raise click.UsageError("--exclude-subject needs --note-id (it excludes that note's "
                               "patient); use --subject to restrict to patients")
    filters = Filters(subjects=subject, categories=category, since=since, until=until,
                      where=where, date_col=date_col)
    try:
        overrides = _fusion(mode, fusion, rrf_k, weights, depth)
        s = Searcher(index_dir, model_dir, verify=not no_verify)
        mode, fused = resolved(s, mode, overrides)
        if s.index.manifest.quality is None:
            click.echo(f"warning: {ix.UNFINISHED}; this query uses default search "
                       "parameters", err=True)
        if note_ids:
            queries = list(note_ids)
            results = s.search_notes(queries, k, filters, exclude_own_subject=exclude_subject,
                                     mode=mode, fusion=fused)
        else:
            queries = ([text] if text else
                       [ln.strip() for ln in query_file.read_text(encoding="utf-8").splitlines()
                        if ln.strip()])
            if not queries:
                raise ValueError(f"{query_file} holds no queries (one per line expected)")
            results = s.search_texts(queries, k, filters, batch_size=batch_size, mode=mode,
                                     fusion=fused)
    except EXPECTED as e:
        raise _fail(e) from None
    if as_json:
        _echo_json([{"query": q, "hits": [h.to_dict() for h in hits]}
                    for q, hits in zip(queries, results)])
        return
    if explain:
        click.echo(explain_line(s, mode, fused))
    for q, hits in zip(queries, results):
        if len(queries) > 1 or note_ids:
            click.echo(f"== {'note ' + str(q) if note_ids else _clip(q, 70)}")
        click.echo(_table(hits, explain))


def _clip(s: str | None, n: int) -> str:
    s = "" if s is None else str(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def _table(hits, explain: bool = False) -> str:
    if not hits:
        return "(no hits)"
    head = ("#", "id", "subject", "hadm", "category", "date", "score",
            *(("dense", "lexical") if explain else ()), "snippet")
    rows = [(str(h.rank), str(h.id), _clip(h.subject, 10), _clip(h.admission, 10),
             _clip(h.category, 18), _clip(h.time, 10), f"{h.score:.4f}",
             *((_provenance(h, "dense"), _provenance(h, "lexical")) if explain else ()),
             _clip(h.snippet, 60)) for h in hits]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in [head, *rows])


def _provenance(hit, retriever: str) -> str:
    """'#rank score' of one retriever for a hit; '-' where it did not return it."""
    r = hit.retrievers.get(retriever)
    if r is None:
        return "-"
    rank = "-" if r["rank"] is None else f"#{r['rank']}"
    return rank if r["score"] is None else f"{rank} {r['score']:.3f}"


def _new_notes_options(fn):
    """The options `add` and `sync` share: how to read and encode NOTES, how to report."""
    for option in reversed([
        click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False,
                     path_type=Path),
                     help="Model directory (default: the one the index was built with)."),
        click.option("--columns", metavar="ROLE=COL,…", help=COLUMNS_HELP + " Their roles "
                     "must be the index's."),
        click.option("--text-col", default=None, help="Text column of NOTES (default: the "
                     "layout's)."),
        click.option("--id-col", default=None,
                     help="Id column of NOTES (default: the layout's)."),
        click.option("--format", "input_format", type=click.Choice(FILE_FORMATS),
                     help="Format of NOTES (default: from the file name)."),
        click.option("--threads", type=int, default=None, help="Encoder threads."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
    ]):
        fn = option(fn)
    return fn


@click.command("add")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("new_notes", metavar="NOTES...", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@_new_notes_options
def add_cmd(index_dir, new_notes, model_dir, columns, text_col, id_col, input_format, threads,
            no_progress, as_json):
    """Append NOTES (one or more notes files, or an embeddings directory) to an index
    without retraining.

    Notes are encoded as the index's own were. Ids the index already holds are refused
    before anything is encoded (`sync` replaces edited notes). Rejected rows are listed in
    INDEX_DIR/rejects-add.csv.
    """
    try:
        s = add_notes(list(new_notes), index_dir=index_dir, model_dir=model_dir,
                      text_col=text_col, id_col=id_col, input_format=input_format,
                      threads=threads, progress=not no_progress, columns=columns)
    except EXPECTED as e:
        raise _fail(e) from None
    _report(s, as_json)


@click.command("sync")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("snapshot", metavar="NOTES...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--remove-missing", is_flag=True, help="Also remove indexed notes whose id is "
              "not in NOTES (retractions); without it they are kept and counted.")
@_new_notes_options
def sync_cmd(index_dir, snapshot, remove_missing, model_dir, columns, text_col, id_col,
             input_format, threads, no_progress, as_json):
    """Make the index hold the notes of NOTES, a snapshot with an id column (one or more
    files, e.g. MIMIC-IV-Note's discharge and radiology tables): encode new and
    edited notes (by a hash of their text), leave unchanged ones, and with
    --remove-missing drop ids NOTES no longer has.

    One commit: readers see the old index or the new one. Killed, the same command
    finishes the job; run again, it changes nothing. Rejects: INDEX_DIR/rejects-sync.csv.
    """
    try:
        s = sync_notes(list(snapshot), index_dir=index_dir, model_dir=model_dir,
                       remove_missing=remove_missing, text_col=text_col, id_col=id_col,
                       input_format=input_format, threads=threads,
                       progress=not no_progress, columns=columns)
    except EXPECTED as e:
        raise _fail(e) from None
    _report(s, as_json)


@click.command("remove")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--ids", multiple=True, help="Note ids, comma- or space-separated (repeatable).")
@click.option("--ids-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file of note ids, one per line.")
@click.option("--missing", type=click.Choice(["error", "ignore"]), default="error",
              show_default=True, help="Ids the index does not hold: refuse the whole removal, "
              "or skip them (re-running a removal).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def remove_cmd(index_dir, ids, ids_file, missing, as_json):
    """Delete notes by id (natively where faiss can, else as tombstones)."""
    wanted = _split_ids(ids)
    try:
        if ids_file:
            try:
                lines = ids_file.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as e:
                raise ValueError(f"{ids_file}: not UTF-8 text (byte {e.start}); give one id "
                                 "a line") from None
            wanted += _split_ids(tuple(lines))
        if not wanted:
            raise click.UsageError("give --ids or --ids-file")
        r = ix.remove_from_index(wanted, index_dir=index_dir, missing=missing)
    except EXPECTED as e:
        raise _fail(e) from None
    if as_json:
        _echo_json({"command": "remove", "index_dir": str(index_dir), **r.to_dict()})
    else:
        click.echo(f"removed {r.removed_notes} notes ({r.removed_rows} rows: {r.native} from "
                   f"faiss, {r.tombstoned} tombstoned)"
                   + (f"; {len(r.missing)} ids were not in the index" if r.missing else "")
                   + f"; {r.manifest.live_rows} live rows")


@click.command("compact")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--max-segments", type=int, default=None,
              help="Merge down to this many lexical segments (smallest neighbours first) "
              "instead of one.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def compact_cmd(index_dir, max_segments, as_json):
    """Merge the lexical (BM25) segments and drop removed notes from them.

    \b
    Every add or sync writes a segment; past 16 segments, or where a third of a
    segment's notes were removed, the commit merges some itself. Answers never change:
    scores are computed over live notes either way; compacting saves query time and disk.
    Each merge is one commit (a reader sees before or after; a killed run leaves the
    index as it was, or merged).

    \b
      mimicsearch compact index/
      mimicsearch compact index/ --max-segments 4 --json
    """
    try:
        r = ix.compact_index(index_dir, max_segments=max_segments)
    except EXPECTED as e:
        raise _fail(e) from None
    if as_json:
        _echo_json({"command": "compact", "index_dir": str(index_dir), **r})
    else:
        click.echo(f"lexical segments {r['segments_before']} -> {r['segments']} in "
                   f"{r['merges']} merges; notes held {r['documents_before']} -> "
                   f"{r['documents']}; {r['bytes'] / 2**20:.1f} MiB")


@click.command("ids")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="A JSON list instead of one per line.")
def ids_cmd(index_dir, as_json):
    """The ids of the notes an index holds, in index order."""
    try:
        ids = Searcher(index_dir).ids()
    except EXPECTED as e:
        raise _fail(e) from None
    if as_json:
        _echo_json(ids)
    else:
        click.echo("\n".join(str(i) for i in ids))


@click.command("info")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def info_cmd(index_dir, as_json):
    """What an index is, how it was built, its columns, measured recall and size."""
    try:
        info = ix.index_info(index_dir)
    except EXPECTED as e:
        raise _fail(e) from None
    if not info["finished"]:
        click.echo(f"warning: {ix.UNFINISHED}; until then queries use default search "
                   "parameters and changes are refused", err=True)
    if as_json:
        _echo_json(info)
        return
    q, b = info["quality"], info["build"]
    lines = [
        f"index      {info['index_dir']}",
        (f"type       {info['index_key']} ({info['family']}), {info['metric']}, "
        f"dim {info['dimension']}"),
        f"model      {info['model_fingerprint']}  "
        + (info["model_dir"] or "(directory not recorded: pass --model to query)"),
        (f"notes      {info['live_notes']} live notes in {info['live_rows']} of "
         f"{info['rows']} rows ({info['tombstones']} tombstoned, {info['removed_natively']} "
         "removed)"),
        "columns    " + ", ".join(f"{n} ({t})" for n, t in info["columns"].items()),
        f"layout     {info['schema']['layout']}: " + ", ".join(
            f"{r}={c}" for r, c in info["schema"]["roles"].items())
        + ("" if info["schema"]["recorded"] else " (implied: built before layouts were "
           "recorded)"),
        f"shards     {info['shards']}"
        + (" (merged on disk)" if any(s["merged_on_disk"] for s in info["shard_files"])
           else ""),
        f"size       {info['disk_bytes'] / 2**20:.1f} MiB on disk",
        f"built      {b['seconds']:.1f} s from {b['source']}: {b['reason']}",
        "modes      " + ", ".join(info["modes"]) + (
            f" (BM25 over whole notes: {_count(len(info['lexical']['segments']), 'segment')}, "
            f"{info['lexical']['bytes'] / 2**20:.1f} MiB)" if info["lexical"] else
            " (no lexical part: built with --no-lexical or --no-full-text)"),
    ]
    if q:
        lines.append(f"quality    recall@{q['k']} {q['recall_at_10']:.3f} (target "
                     f"{q['recall_target']}{'' if q['target_met'] else ', NOT met'}) at "
                     f"{q['search_params'] or 'exact search'}, {q['ms_per_query']:.2f} ms/query, "
                     f"measured on {q['queries']} queries over {q['rows_measured']} vectors")
    c = info["calibration"]
    lines.append("calibrated " + (calibration_line(c)[len("auto: "):] + (
        f"; {c['changed']} notes changed since" if c["changed"] else "") if c else
        "no (`mimicsearch calibrate` measures the search settings; auto uses RRF meanwhile)"))
    if c and c.get("patient_search"):
        ps = c["patient_search"]
        row = next((r for r in ps.get("table", []) if r["chosen"]), None)
        lines.append(f"patients   auto: {ps['chosen']['label']}" + (
            f", {ps['measure']} {row['score']:.3f} on {ps['patients']} patients" if row else
            f" ({ps.get('reason')})"))
    click.echo("\n".join(lines))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


COMMANDS: list = [build_index_cmd, query_cmd, add_cmd, sync_cmd, remove_cmd, compact_cmd,
                  ids_cmd, info_cmd]
