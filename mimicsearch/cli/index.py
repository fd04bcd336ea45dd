"""CLI commands: build-index, query, add, remove, info."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .. import index as ix
from ..options import EncodeOptions
from ..pipeline import add_notes, build_index_from
from ..search import Filters, Searcher
from ._extras import import_stage


def _fail(e: Exception) -> click.ClickException:
    return click.ClickException(str(e))


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.command("build-index")
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False,
              path_type=Path), help="Exported model directory (needed when INPUT is notes).")
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
@click.option("--text-col", default=None, help="Text column of the notes (default TEXT).")
@click.option("--id-col", default=None, help="Note id column (default ROW_ID).")
@click.option("--dim", type=int, default=None, help="Matryoshka dimension to index.")
@click.option("--long", "long_mode", type=click.Choice(["truncate", "chunk", "windows"]),
              default="truncate", show_default=True,
              help="Notes longer than the model's limit: truncate, mean of windows (chunk), "
              "or one vector per window (windows; hits show each note once).")
@click.option("--threads", type=int, default=None, help="Encoder threads.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the index manifest as JSON.")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local",
              show_default=True, help="spark: encode and build shards on Spark executors, "
              "train and measure on the driver (the [spark] extra).")
@click.option("--master", help="Spark master URL with --engine spark (default: spark-submit's, "
              "else local[*]).")
def build_index_cmd(input_path, model_dir, out_dir, memory, index_key, shard_size,
                    merge_on_disk, recall_target, text_col, id_col, dim, long_mode, threads,
                    seed, no_progress, as_json, engine, master):
    """Build a search index from notes (encoded with --model) or an embeddings directory."""
    if engine == "spark":
        import_stage("mimicsearch.spark", "spark")
    elif master:
        raise click.UsageError("--master needs --engine spark")
    try:
        budget = ix.parse_bytes(memory) if memory else ix.default_memory_budget()
        m = build_index_from(
            input_path, out_dir, model_dir,
            encode=EncodeOptions(text_col=text_col, id_col=id_col, dim=dim, long=long_mode,
                                 snippets=True),
            build=ix.BuildOptions(memory_bytes=budget, index_key=index_key,
                                  shard_size=shard_size, merge=merge_on_disk,
                                  recall_target=recall_target, seed=seed),
            engine=engine, threads=threads, progress=not no_progress, master=master)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        raise _fail(e) from None
    if as_json:
        _echo_json(m.to_dict())
        return
    q = m.quality
    click.echo(f"built {out_dir}: {m.index_key} over {m.rows} notes, dim {m.dimension}, "
               f"{len(m.shards)} shard(s) ({m.build.reason})")
    if q:
        click.echo(f"recall@{q.k} {q.recall_at_10:.3f} (target {q.recall_target}"
                   f"{'' if q.target_met else ', NOT met'}) at {q.search_params or 'exact'}, "
                   f"{q.ms_per_query:.2f} ms/query")


def _split_ids(values: tuple[str, ...]) -> list[str]:
    return [v for chunk in values for v in chunk.replace(",", " ").split() if v]


@click.command("query")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("text", required=False)
@click.option("--file", "query_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Queries, one per line.")
@click.option("--note-id", "note_ids", multiple=True,
              help="Use a stored note as the query (repeatable).")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--subject", multiple=True, help="Only notes of this SUBJECT_ID (repeatable).")
@click.option("--category", multiple=True, help="Only notes of this CATEGORY (repeatable).")
@click.option("--exclude-subject", is_flag=True,
              help="With --note-id: leave out all notes of the query note's patient.")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False,
              path_type=Path), help="Model directory (default: the one the index was built with).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Hits as JSON.")
def query_cmd(index_dir, text, query_file, note_ids, k, subject, category, exclude_subject,
              model_dir, batch_size, as_json):
    """Search an index with a text, a file of texts (--file) or stored notes (--note-id)."""
    given = sum(bool(x) for x in (text, query_file, note_ids))
    if given != 1:
        raise click.UsageError("give exactly one of TEXT, --file or --note-id")
    if exclude_subject and not note_ids:
        raise click.UsageError("--exclude-subject needs --note-id (it excludes that note's "
                               "patient); use --subject to restrict to patients")
    filters = Filters(tuple(subject), tuple(category))
    try:
        s = Searcher(index_dir, model_dir)
        if note_ids:
            queries = list(note_ids)
            results = s.search_notes(queries, k, filters, exclude_own_subject=exclude_subject)
        else:
            queries = ([text] if text else
                       [ln.strip() for ln in query_file.read_text(encoding="utf-8").splitlines()
                        if ln.strip()])
            if not queries:
                raise ValueError(f"{query_file} holds no queries (one per line expected)")
            results = s.search_texts(queries, k, filters, batch_size=batch_size)
    except (ValueError, FileNotFoundError) as e:
        raise _fail(e) from None
    if as_json:
        _echo_json([{"query": q, "hits": [h.to_dict() for h in hits]}
                    for q, hits in zip(queries, results)])
        return
    for q, hits in zip(queries, results):
        if len(queries) > 1 or note_ids:
            click.echo(f"== {'note ' + str(q) if note_ids else _clip(q, 70)}")
        click.echo(_table(hits))


def _clip(s: str | None, n: int) -> str:
    s = "" if s is None else str(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def _table(hits) -> str:
    if not hits:
        return "(no hits)"
    head = ("#", "id", "subject", "hadm", "category", "date", "score", "snippet")
    rows = [(str(h.rank), str(h.id), _clip(h.subject_id, 10), _clip(h.hadm_id, 10),
             _clip(h.category, 18), _clip(h.chartdate, 10), f"{h.score:.4f}",
             _clip(h.snippet, 60)) for h in hits]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in [head, *rows])


@click.command("add")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("new_notes", type=click.Path(exists=True, path_type=Path))
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False,
              path_type=Path), help="Model directory (default: the one the index was built with).")
@click.option("--text-col", default=None)
@click.option("--id-col", default=None)
@click.option("--threads", type=int, default=None)
@click.option("--no-progress", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def add_cmd(index_dir, new_notes, model_dir, text_col, id_col, threads, no_progress, as_json):
    """Append notes (or an embeddings directory) to an index without retraining it."""
    try:
        before = ix.IndexManifest.load(index_dir).rows
        m = add_notes(index_dir, new_notes, model_dir, text_col=text_col, id_col=id_col,
                      threads=threads, progress=not no_progress)
    except (ValueError, FileNotFoundError) as e:
        raise _fail(e) from None
    summary = {"added": m.rows - before, "rows": m.rows, "live_rows": m.live_rows,
               "shards": len(m.shards)}
    if as_json:
        _echo_json(summary)
    else:
        click.echo(f"added {summary['added']} notes to {index_dir}: {m.live_rows} live notes in "
                   f"{len(m.shards)} shard(s)")


@click.command("remove")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--ids", multiple=True, help="Note ids, comma- or space-separated (repeatable).")
@click.option("--ids-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file of note ids, one per line.")
@click.option("--json", "as_json", is_flag=True)
def remove_cmd(index_dir, ids, ids_file, as_json):
    """Delete notes by id (natively where faiss can, else as tombstones)."""
    wanted = _split_ids(ids)
    if ids_file:
        wanted += _split_ids(tuple(ids_file.read_text(encoding="utf-8").splitlines()))
    if not wanted:
        raise click.UsageError("give --ids or --ids-file")
    try:
        r = ix.remove_from_index(index_dir, wanted)
    except (ValueError, FileNotFoundError) as e:
        raise _fail(e) from None
    summary = {"removed_rows": r.removed_rows, "native": r.native, "tombstoned": r.tombstoned,
               "live_rows": r.manifest.live_rows}
    if as_json:
        _echo_json(summary)
    else:
        click.echo(f"removed {r.removed_rows} rows ({r.native} from faiss, {r.tombstoned} "
                   f"tombstoned); {r.manifest.live_rows} live notes")


@click.command("info")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def info_cmd(index_dir, as_json):
    """What an index is, how it was built, its measured recall and size."""
    try:
        info = ix.index_info(index_dir)
    except (ValueError, FileNotFoundError) as e:
        raise _fail(e) from None
    if as_json:
        _echo_json(info)
        return
    q, b = info["quality"], info["build"]
    lines = [
        f"index      {info['path']}",
        (f"type       {info['index_key']} ({info['family']}), {info['metric']}, "
        f"dim {info['dimension']}"),
        f"model      {info['model_fingerprint']}  "
        + (info["model_dir"] or "(directory not recorded: pass --model to query)"),
        (f"notes      {info['live_rows']} live of {info['rows']} rows "
        f"({info['tombstones']} tombstoned, {info['removed_natively']} removed)"),
        f"shards     {len(info['shards'])}"
        + (" (merged on disk)" if any(s["merged_on_disk"] for s in info["shards"]) else ""),
        f"size       {info['disk_bytes'] / 2**20:.1f} MiB on disk",
        f"built      {b['seconds']:.1f} s from {b['source']}: {b['reason']}",
    ]
    if q:
        lines.append(f"quality    recall@{q['k']} {q['recall_at_10']:.3f} (target "
                     f"{q['recall_target']}{'' if q['target_met'] else ', NOT met'}) at "
                     f"{q['search_params'] or 'exact search'}, {q['ms_per_query']:.2f} ms/query, "
                     f"measured on {q['queries']} queries over {q['rows_measured']} vectors")
    click.echo("\n".join(lines))


COMMANDS: list = [build_index_cmd, query_cmd, add_cmd, remove_cmd, info_cmd]
