"""Property tests: hostile CSV/TSV/JSONL/Parquet inputs never crash the readers or lose a row.

Invariant for every generated file: the reader either raises a clear error naming the file
(`MalformedInputError`, or `ValueError` for an unusable header), or every physical record we
wrote comes back exactly once, as an accepted record with its exact text or as a reject with
its line. Examples are bounded for CI; `make soak` raises them via MIMICSEARCH_FUZZ_EXAMPLES.
"""
import csv
import gzip
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mimicsearch.readers import IdType, MalformedInputError, Reader

EXAMPLES = int(os.environ.get("MIMICSEARCH_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="MIMICSEARCH_FUZZ_EXAMPLES"
                not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Characters that break naive parsers; "\udcff" becomes the raw byte 0xff (invalid UTF-8).
HOSTILE = ['"', ",", "\t", "\n", "\r", "\r\n", "\x00", "\ufeff", "\u2028", "\udcff", " ", "é",
           "\\", "'", "{", "}", "0", "9", "-"]
texts = st.one_of(
    st.lists(st.sampled_from(HOSTILE) | st.text(max_size=3), max_size=12).map("".join),
    st.text(max_size=20),
    st.integers(0, 3).map(lambda k: "x" * (k * 300_000)),  # huge fields, up to ~1 MB
)
int_ids = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([2**63 - 1, 2**63, -(2**63),
                                                                   -(2**63) - 1]))
ids = st.one_of(int_ids.map(str), st.just(""), st.just(" 7 "), st.just("1.0"), st.just("٣"),
                st.just("9" * 5000), texts.map(lambda t: t[:20]))
HEADERS = [["ROW_ID", "TEXT"], ["ROW_ID", "CATEGORY", "TEXT"], ["TEXT"],
           ["ROW_ID", "TEXT", "TEXT"], ["row_id", "text", "Text", "EXTRA"],
           ["note_id", "TEXT", "note_type"], ["ROW_ID", "ROW_ID", "TEXT", "CATEGORY"]]
ALLOWED = (MalformedInputError, ValueError)


def physical_lines(chunk: str) -> int:
    """Lines as the reader counts them: split on \\n, \\r and \\r\\n."""
    return len(io.StringIO(chunk, newline="").readlines())


def read_everything(path: Path, **kw):
    """(batches, error): error is the allowed exception the reader raised, if any."""
    try:
        return list(Reader(path, batch_size=7, **kw)), None
    except ALLOWED as e:
        return None, e


def check_error_names_file(err: Exception, path: Path):
    assert str(path) in str(err), f"error does not name the file: {err!r}"
    assert isinstance(err, MalformedInputError) or "column" in str(err), repr(err)


def check_accounting(batches, n_written: int, line_of: list[int], text_of: list):
    """Every written record comes back once: accepted with its exact text, or rejected."""
    records = sum(b.records for b in batches)
    assert records == n_written
    assert all(b.records == len(b.texts) + len(b.rejects) for b in batches)
    by_line = dict(zip(line_of, text_of))
    accepted = [(ln, t) for b in batches for ln, t in zip(b.lines.tolist(), b.texts)]
    rejected = [r.line for b in batches for r in b.rejects]
    assert sorted([ln for ln, _ in accepted] + rejected) == sorted(line_of)
    for ln, t in accepted:
        assert t == by_line[ln]
        assert t.strip() and t.encode("utf-8")  # accepted text is non-blank, valid UTF-8
    for b in batches:
        assert len(b.ids) == len(b.texts) == len(b.lines)
        assert all(len(v) == len(b.texts) for v in b.metadata.values())
        assert all(r.text is None for r in b.rejects)  # no note text unless show_text
    return accepted, rejected


@st.composite
def csv_files(draw):
    header = draw(st.sampled_from(HEADERS))
    delimiter = draw(st.sampled_from([",", "\t"]))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    rows = draw(st.lists(st.tuples(ids, texts, texts), max_size=12))
    return header, delimiter, quoting, rows, draw(st.booleans()), draw(st.booleans())


@FUZZ
@given(csv_files(), st.integers(0, 12), st.booleans())
def test_well_formed_csv_loses_no_row(spec, skip, gz):
    """...and a run resumed after `skip` records gives exactly the rest of a full read."""
    header, delimiter, quoting, rows, bom, crlf = spec
    out = io.StringIO(newline="")
    # Python 3.11's writer leaves a lone "\r" unquoted under QUOTE_MINIMAL with a "\n"
    # terminator; such a file is malformed (the reader names its line), not well formed.
    crlf = crlf or quoting == csv.QUOTE_MINIMAL
    w = csv.writer(out, delimiter=delimiter, quoting=quoting,
                   lineterminator="\r\n" if crlf else "\n")
    w.writerow(header)
    line, line_of, text_of = 1 + 1, [], []
    for rid, text, other in rows:
        cells = {"row_id": rid, "note_id": rid, "text": text}
        row = [cells.get(h.lower(), other) for h in header]
        before = out.tell()
        w.writerow(row)
        chunk = out.getvalue()[before:]
        line_of.append(line)
        text_of.append(text)
        line += physical_lines(chunk)
    data = ("\ufeff" if bom else "") + out.getvalue()
    raw = data.encode("utf-8", "surrogateescape")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("notes.tsv" if delimiter == "\t" else "notes.csv")
        if gz:
            path = path.with_name(path.name + ".gz")
            raw = gzip.compress(raw)
        path.write_bytes(raw)
        batches, err = read_everything(path)
        if err is not None:
            check_error_names_file(err, path)
            # A well-formed file only fails on its header: duplicated/case-ambiguous columns.
            assert len(set(map(str.lower, header))) < len(header), err
            return
        check_accounting(batches, len(rows), line_of, text_of)
        skip = min(skip, len(rows))
        cut = line_of[skip] if skip < len(rows) else line
        seen = {i: ln for b in batches for i, ln in zip(b.ids, b.lines.tolist()) if ln < cut}
        rest = list(Reader(path, batch_size=5, skip=skip, seen=seen))
    full = [(ln, i, t) for b in batches for ln, i, t in zip(b.lines.tolist(), b.ids, b.texts)]
    assert [(ln, i, t) for b in rest for ln, i, t in zip(b.lines.tolist(), b.ids, b.texts)] \
        == [x for x in full if x[0] >= cut]
    assert [r for b in rest for r in b.rejects] == \
        [r for b in batches for r in b.rejects if r.line >= cut]


@FUZZ
@given(csv_files(), st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(
    [b'"', b",", b"\n", b"\r", b"\x00", b"\xff", b"\xef\xbb\xbf", b"", b'""', b"\t"])),
    min_size=1, max_size=4))
def test_mangled_csv_errors_name_the_line_or_account_for_every_row(spec, edits):
    header, delimiter, _, rows, _, _ = spec
    out = io.StringIO(newline="")
    w = csv.writer(out, delimiter=delimiter)
    w.writerow(header)
    for rid, text, other in rows:
        w.writerow([{"row_id": rid, "note_id": rid, "text": text}.get(h.lower(), other)
                    for h in header])
    data = bytearray(out.getvalue().encode("utf-8", "surrogateescape"))
    for pos, repl in edits:  # overwrite one byte at a random place
        pos = pos % (len(data) + 1)
        data[pos:pos + 1] = repl
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "notes.csv"
        path.write_bytes(bytes(data))
        batches, err = read_everything(path, delimiter=delimiter)
    if err is not None:
        check_error_names_file(err, path)
        return
    for b in batches:
        assert b.records == len(b.texts) + len(b.rejects)
        assert all(t.strip() for t in b.texts)
        lines = b.lines.tolist() + [r.line for r in b.rejects]
        assert len(set(lines)) == len(lines) and min(lines, default=2) >= 2


json_values = st.one_of(
    st.none(), st.booleans(), texts, int_ids, st.floats(allow_nan=True),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                         max_size=2))
json_keys = st.sampled_from(["TEXT", "ROW_ID", "note_id", "CATEGORY", "text", "x"])


@FUZZ
@given(st.lists(st.tuples(st.dictionaries(json_keys, json_values, max_size=5), texts, json_values,
                          st.booleans(), st.integers(0, 2)), min_size=0, max_size=12),
       st.booleans(), st.sampled_from([None, IdType.INT, IdType.STR]))
def test_jsonl_loses_no_row(objs, ascii_only, id_type):
    lines, line_of, text_of = [], [], []
    for i, (obj, text, rid, with_text, blanks) in enumerate(objs):
        obj = dict(obj)
        if with_text or i == 0:
            obj["TEXT"] = text
        if i == 0:
            obj["ROW_ID"] = rid
        lines.extend([""] * blanks if i else [])
        lines.append(json.dumps(obj, ensure_ascii=ascii_only))
        line_of.append(len(lines))
        text_of.append(obj.get("TEXT"))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "notes.jsonl"
        path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape"))
        kw = {"id_type": id_type} if id_type else {}
        batches, err = read_everything(path, **kw)
    if err is not None:
        check_error_names_file(err, path)
        keys = [k.lower() for k in json.loads(lines[0])] if objs else []
        # empty or ambiguous header, or keys of later objects that fit two layouts equally
        assert not objs or len(set(keys)) < len(keys) or "equally" in str(err), err
        return
    check_accounting(batches, len(objs), line_of, text_of)


@FUZZ
@given(st.lists(st.tuples(st.one_of(st.none(), texts), st.one_of(st.none(), int_ids),
                          st.one_of(st.none(), st.text(max_size=5))), max_size=30),
       st.sampled_from(["int64", "uint64", "float64", "string", "absent"]),
       st.sampled_from(["string", "large_string", "binary"]), st.booleans())
def test_parquet_loses_no_row(rows, id_kind, text_kind, duplicate_column):
    n = len(rows)
    if id_kind == "uint64":
        raw = [None if r[1] is None else abs(r[1]) % 2**64 for r in rows]
    elif id_kind == "int64":
        raw = [None if r[1] is None else int(np.clip(r[1], -(2**63), 2**63 - 1)) for r in rows]
    elif id_kind == "float64":
        raw = [None if r[1] is None else float(r[1]) for r in rows]
    else:
        raw = [None if r[1] is None else str(r[1]) for r in rows]
    text_arr = [None if r[0] is None else (r[0].encode("utf-8", "surrogateescape")
                                           if text_kind == "binary" else r[0]) for r in rows]
    if text_kind != "binary":  # Arrow strings must be valid UTF-8
        text_arr = [None if t is None else t.encode("utf-8", "replace").decode() for t in text_arr]
    arrays = [pa.array(text_arr, type=getattr(pa, text_kind)()),
              pa.array([r[2] for r in rows], type=pa.string())]
    names = ["TEXT", "CATEGORY"]
    if id_kind != "absent":
        arrays.append(pa.array(raw, type=getattr(pa, id_kind)()))
        names.append("ROW_ID")
    if duplicate_column:
        arrays.append(arrays[1])
        names.append("CATEGORY")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "notes.parquet"
        pq.write_table(pa.Table.from_arrays(arrays, names=names), path)
        batches, err = read_everything(path)
    if err is not None:
        check_error_names_file(err, path)
        assert duplicate_column, err
        return
    lines = list(range(1, n + 1))
    check_accounting(batches, n, lines, text_arr)
    if text_kind == "binary":
        assert not any(b.texts for b in batches)  # bytes are never taken as text


@pytest.mark.parametrize("name,data", [
    ("empty.csv", b""), ("bom.csv", b"\xef\xbb\xbf"), ("header.csv", b"ROW_ID,TEXT\n"),
    ("nul.csv", b"\x00\x00\x00"), ("bin.csv", bytes(range(256))), ("empty.jsonl", b""),
    ("blank.jsonl", b"\n\n\n"), ("array.jsonl", b"[1,2]\n"), ("bin.jsonl", bytes(range(256))),
    ("empty.parquet", b""), ("junk.parquet", b"PAR1" + b"\x00" * 64 + b"PAR1"),
    ("trunc.tsv", b"ROW_ID\tTEXT\n1\t\"abc"),
    ("longnum.jsonl", b'{"TEXT": "a", "ROW_ID": 1}\n{"TEXT": "b", "ROW_ID": ' + b"9" * 5000 + b"}"),
])
def test_degenerate_files_give_a_clear_error_or_no_rows(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    batches, err = read_everything(path)
    if err is not None:
        check_error_names_file(err, path)
    else:
        assert sum(b.records for b in batches) == 0


def test_huge_numeric_id_is_rejected_not_a_crash(tmp_path):
    """int() refuses strings over 4300 digits with a bare ValueError naming no file."""
    path = tmp_path / "n.csv"
    path.write_text(f"ROW_ID,TEXT\n{'9' * 5000},a\n1,b\n")
    batches, err = read_everything(path)
    assert err is None
    assert [r.reason for b in batches for r in b.rejects] == ["bad id: outside int64"]
    assert [t for b in batches for t in b.texts] == ["b"]


@pytest.mark.parametrize("header", ["ROW_ID,text,Text", "ROW_ID,TEXT,TEXT", "ROW_ID,ROW_ID,TEXT"])
def test_ambiguous_or_duplicated_columns_are_refused(tmp_path, header):
    """The reader used to take one of two same-named columns silently."""
    path = tmp_path / "n.csv"
    path.write_text(f"{header}\n1,a,b\n")
    with pytest.raises(ValueError, match=r"n.csv: .*(ambiguous|appears 2 times)"):
        Reader(path)


def test_exact_column_name_wins_over_a_case_variant(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"ROW_ID": 1, "TEXT": "mimic", "text": "other"}\n')
    assert [t for b in Reader(path) for t in b.texts] == ["mimic"]
