"""CLI commands: encode."""
from __future__ import annotations

import json

import click

from ..corpus import BATCH_SIZE, SHARD_SIZE
from ..encoder import LongMode
from ..readers import FILE_FORMATS, IdType
from ..schema import COLUMNS_HELP
from ._errors import EXPECTED, fail
from ._extras import import_stage


@click.command("encode")
@click.argument("input", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Model directory written by `mimicsearch export`.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Embeddings directory (Parquet shards + manifest.json + rejects.csv).")
@click.option("--columns", metavar="ROLE=COL,…", help=COLUMNS_HELP)
@click.option("--text-col", help="Text column (same as --columns text=COL).")
@click.option("--id-col", help="Id column (same as --columns id=COL; default: the layout's, "
              "else the row number).")
@click.option("--keep", multiple=True,
              help="Metadata column to keep (repeatable; default: every role's column).")
@click.option("--no-keep", is_flag=True, help="Keep no metadata columns.")
@click.option("--id-type", type=click.Choice([t.value for t in IdType]), default="auto",
              show_default=True, help="auto: int64 for ROW_ID/row numbers, else string.")
@click.option("--format", "input_format", type=click.Choice(FILE_FORMATS),
              help="Input format (default: from the file name; .gz is read compressed).")
@click.option("--prompt", type=click.Choice(["document", "query", "none"]), default="document",
              show_default=True, help="Model prompt prepended to each note.")
@click.option("--dim", type=int, help="Matryoshka dimension to truncate to.")
@click.option("--long", type=click.Choice([m.value for m in LongMode]), default="truncate",
              show_default=True,
              help="Notes over max_seq_length: cut; chunk (mean of overlapping windows); "
                   "windows (one row per window, id = parent note).")
@click.option("--max-length", type=int,
              help="Tokens per note (or window), below the model's max_seq_length: faster, "
                   "and the cut counts as truncation (default: the model's).")
@click.option("--precision", type=click.Choice(["fp32", "int8", "int4"]),
              help="Model variant (default: the int8 one the export measured fastest that "
              "passed parity, else fp32).")
@click.option("--runtime", type=click.Choice(["onnxruntime", "openvino"]),
              help="Runtime of the model variant: openvino runs the export's openvino-int8 "
              "(the [openvino] extra; default: the variant the export measured fastest).")
@click.option("--threads", type=int, help="ORT threads (default: physical cores).")
@click.option("--shard-size", type=int, default=SHARD_SIZE, show_default=True,
              help="Rows per Parquet shard (the resume granularity).")
@click.option("--batch-size", type=int, default=BATCH_SIZE, show_default=True,
              help="Records read, tokenized and encoded together (bounds memory).")
@click.option("--npy", is_flag=True, help="Also write embeddings.npy (rows in shard order).")
@click.option("--snippets", is_flag=True,
              help="Keep each note's opening (200 characters, clinical text) beside the shards, "
                   "so an index built from this directory shows it in hits (build-index from "
                   "notes always does).")
@click.option("--full-text", is_flag=True,
              help="Also keep each note's whole text (clinical text) beside the shards, so an "
                   "index built from this directory can show whole notes (`serve`).")
@click.option("--show-text", is_flag=True,
              help="Put rejected notes' text into rejects.csv (PHI: off by default).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier run in --out with "
              "different arguments (the same arguments resume it).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local",
              show_default=True, help="spark: read, encode and write with Spark, one shard "
              "per partition (the [spark] extra; no resume, --npy, --show-text, --long "
              "windows, --shard-size or --batch-size).")
@click.option("--master", help="Spark master URL with --engine spark (default: spark-submit's, "
              "else local[*]).")
def encode(input, model_dir, out_dir, columns, text_col, id_col, keep, no_keep, id_type,
           input_format,
           prompt, dim, long, max_length, precision, runtime, threads, shard_size, batch_size, npy,
           snippets, full_text, show_text, overwrite, no_progress, as_json, engine, master):
    """Encode every note of INPUT (one or more note tables: CSV/TSV/JSONL, optionally .gz,
    or Parquet) into OUT.

    The layout is detected from the columns: MIMIC-III NOTEEVENTS, MIMIC-IV-Note
    (discharge.csv.gz radiology.csv.gz, read as one input) or OMOP NOTE; --columns names
    the roles of any other table. Rows that cannot be encoded go to OUT/rejects.csv with
    line (FILE:LINE for several files) and reason. Interrupted, the same command resumes
    from the last complete shard.
    """
    from ..options import EncodeOptions
    from ..pipeline import encode_notes

    if engine == "spark":
        import_stage("mimicsearch.spark", "spark")
    try:
        options = EncodeOptions(
            text_col=text_col, id_col=id_col, columns=columns,
            keep=() if no_keep else (tuple(keep) or None),
            id_type=id_type, input_format=input_format,
            prompt=None if prompt == "none" else prompt, dim=dim, long=long,
            max_length=max_length, precision=precision, runtime=runtime, snippets=snippets,
                              full_text=full_text)
        s = encode_notes(list(input), model_dir=model_dir, out_dir=out_dir, options=options,
                         engine=engine, threads=threads,
                         overwrite=overwrite, progress=not no_progress, shard_size=shard_size,
                         batch_size=batch_size, show_text=show_text, npy=npy, master=master)
    except EXPECTED as e:
        raise fail(e) from None
    if as_json:
        click.echo(json.dumps(s.to_dict(), indent=2))
        return
    click.echo(f"read {s.read} rows: {s.encoded} encoded, {s.rejected} rejected "
               f"(see {s.out_dir}/rejects.csv), {s.truncated} longer than the model's max "
               f"length ({long})")
    click.echo(f"wrote {s.rows_written} x {s.dimension} embeddings in {s.shards} shard(s) to "
               f"{s.out_dir} "
               f"in {s.seconds:.1f}s ({s.notes_per_s:.1f} notes/s)"
               + (f"; resumed at row {s.resumed_at}" if s.resumed_at else ""))


COMMANDS: list = [encode]
