"""Readers: column recognition, exact line numbers, rejects accounting, malformed files."""
import csv
import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mimicsearch.idset import IdSet
from mimicsearch.readers import IdType, MalformedInputError, Reader

NOTE_HEADER = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME",
               "CATEGORY", "DESCRIPTION", "CGID", "ISERROR", "TEXT"]


def write_notes(path, rows, quoting=csv.QUOTE_ALL):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, quoting=quoting)
        w.writerow(NOTE_HEADER)
        for r in rows:
            w.writerow(r)
    return path


def note(row_id, text, subject=7, hadm=""):
    return [row_id, subject, hadm, "2150-01-01", "", "", "Radiology", "", "", "", text]


def read_all(reader):
    batches = list(reader)
    lines = np.concatenate([b.lines for b in batches]) if batches else np.zeros(0)
    return batches, lines.tolist(), [t for b in batches for t in b.texts], \
        [r for b in batches for r in b.rejects]


def test_noteevents_columns_and_lines_with_embedded_newlines(tmp_path):
    path = write_notes(tmp_path / "NOTEEVENTS.csv", [
        note(1, "line one\nline two\nline three", hadm=100),
        note(2, "single line"),
        note(3, "a\r\nb", hadm=101),
    ])
    r = Reader(path, batch_size=2)
    assert r.columns.text == "TEXT" and r.columns.id == "ROW_ID"
    assert r.columns.keep == ("SUBJECT_ID", "HADM_ID", "CATEGORY", "CHARTDATE", "CHARTTIME",
                              "ISERROR")
    assert r.columns.schema.layout == "mimic-iii" and r.columns.schema.subject == "SUBJECT_ID"
    assert r.columns.id_type is IdType.INT
    batches, lines, texts, rejects = read_all(r)
    assert [b.records for b in batches] == [2, 1] and [b.start for b in batches] == [0, 2]
    assert lines == [2, 5, 6]  # the header is line 1; note 1 spans lines 2-4
    assert texts[2] == "a\r\nb" and not rejects
    assert batches[0].ids == [1, 2]
    assert batches[0].metadata["HADM_ID"] == ["100", None]
    raw = path.read_text().splitlines()
    assert all(raw[n - 1].startswith(f'"{i}"') for n, i in zip(lines, [1, 2, 3]))


def test_hostile_csv_rejects_account_for_every_row(tmp_path):
    path = tmp_path / "hostile.csv"
    write_notes(path, [
        note(1, "fine"),
        note(2, ""),  # empty
        note(3, "   \n  "),  # blank
        note("x7", "bad id"),
        note("", "no id"),
        note(1, "duplicate of row 1"),
        note(6, "BAD_BYTES"),
        note(7, "multi\nline\nfine"),
        note(99999999999999999999, "too big for int64"),
        note("\u0663", "an Arabic-Indic digit three, which int() would take"),
    ])
    data = path.read_bytes().replace(b"BAD_BYTES", b"caf\xe9 latin-1")
    path.write_bytes(data)
    r = Reader(path, batch_size=4, show_text=False)
    batches, _, texts, rejects = read_all(r)
    assert sum(b.records for b in batches) == 10 == len(texts) + len(rejects)
    assert texts == ["fine", "multi\nline\nfine"]
    got = {(x.line, x.reason) for x in rejects}
    assert got == {(3, "empty text"), (4, "empty text"), (6, "bad id: not an integer"),
                   (7, "missing id"), (8, "duplicate id (first at line 2)"),
                   (9, "text is not valid UTF-8"), (13, "bad id: outside int64"),
                   (14, "bad id: not an integer")}
    assert all(x.text is None for x in rejects)  # no note text unless asked


def test_show_text_puts_rejected_text_in_rejects(tmp_path):
    path = write_notes(tmp_path / "n.csv", [note(1, "a"), note(1, "dup text")])
    *_, rejects = read_all(Reader(path, show_text=True))
    assert rejects[0].text == "dup text"


def test_unbalanced_quote_names_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('ROW_ID,TEXT\n1,"ok"\n2,"never closed\n3,"x"\n4,y\n')
    with pytest.raises(MalformedInputError, match=r"bad.csv: record starting at line 3"):
        read_all(Reader(path))


def test_wrong_column_count_names_file_and_line(tmp_path):
    path = tmp_path / "cols.csv"
    path.write_text('ROW_ID,TEXT\n1,"ok"\n2,"multi\nline"\n3,a,b\n')
    with pytest.raises(MalformedInputError, match=r"cols.csv: line 5: expected 2 columns, found 3"):
        read_all(Reader(path))


def test_missing_text_column_lists_columns(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("id,body\n1,a\n")
    with pytest.raises(ValueError, match=r"\['id', 'body'\] fit no known note layout.*--columns.*--text-col"):
        Reader(path)
    r = Reader(path, text_col="body", id_col="id")
    assert r.columns.id_type is IdType.STR
    assert read_all(r)[2] == ["a"]


def test_tsv_gzip_jsonl_parquet_give_the_same_records(tmp_path):
    rows = [("n1", "first note", "A"), ("n2", "second\nnote", "B"), ("n3", "", "C")]
    with gzip.open(tmp_path / "notes.tsv.gz", "wt", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["nid", "body", "kind"])
        w.writerows(rows)
    with open(tmp_path / "notes.jsonl", "w") as f:
        f.writelines(json.dumps({"nid": n, "body": b, "kind": k}) + "\n\n" for n, b, k in rows)
    pq.write_table(pa.table({"nid": [r[0] for r in rows], "body": [r[1] for r in rows],
                             "kind": [r[2] for r in rows]}), tmp_path / "notes.parquet")
    expect_lines = {"notes.tsv.gz": [2, 3], "notes.jsonl": [1, 3], "notes.parquet": [1, 2]}
    for name, want_lines in expect_lines.items():
        r = Reader(tmp_path / name, text_col="body", id_col="nid", keep=["kind"])
        batches, lines, texts, rejects = read_all(r)
        assert texts == ["first note", "second\nnote"], name
        assert batches[0].ids == ["n1", "n2"]
        assert batches[0].metadata == {"kind": ["A", "B"]}
        assert lines == want_lines, name
        assert [x.reason for x in rejects] == ["empty text"]
        assert r.progress() == pytest.approx(1.0, abs=0.05) or name.endswith(".gz")


def test_invalid_jsonl_line_names_line(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"text": "a", "id": 1}\n{"text": oops}\n')
    with pytest.raises(MalformedInputError, match=r"n.jsonl: line 2: invalid JSON"):
        read_all(Reader(path, id_col="id"))


def test_skip_and_seen_resume_where_a_run_stopped(tmp_path):
    path = write_notes(tmp_path / "n.csv", [note(i, f"note {i}") for i in range(1, 8)]
                       + [note(2, "dup")])
    first = list(Reader(path, batch_size=3))[:1]
    seen = IdSet()
    seen.update([i for b in first for i in b.ids], [ln for b in first for ln in b.lines])
    rest = list(Reader(path, batch_size=3, skip=3, seen=seen))
    assert [b.start for b in rest] == [3, 6]
    assert [t for b in rest for t in b.texts] == [f"note {i}" for i in range(4, 8)]
    assert [x.reason for b in rest for x in b.rejects] == ["duplicate id (first at line 3)"]
