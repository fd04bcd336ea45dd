"""The note tables users hold, through every stage: MIMIC-IV-Note (two files, ICD-9 and
ICD-10 diagnoses), OMOP NOTE and a `--columns` export give the answers the same notes give
in MIMIC-III's layout; bad input is a one-line error, exit 2, nothing written."""
from __future__ import annotations

import csv
import gzip
import json
import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from mimicsearch.cli import main
from mimicsearch.filters import Filters
from mimicsearch.icd import chapter
from mimicsearch.index import BuildOptions
from mimicsearch.options import EncodeOptions
from mimicsearch.pipeline import TruncationWarning, build_index_from
from mimicsearch.search import Searcher
from mimicsearch.synth.layouts import write_layout

PATIENTS = 8
ENCODE = dict(max_length=64, precision="fp32", snippets=True, full_text=True)


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    """The same synthetic patients in MIMIC-III, MIMIC-IV-Note and OMOP, and MIMIC-III files
    holding exactly the notes each other layout holds."""
    root = tmp_path_factory.mktemp("layouts")
    out = {}
    for layout in ("mimic-iii", "mimic-iv", "omop"):
        write_layout(PATIENTS, root / layout, layout, seed=3)
        out[layout] = root / layout
    notes = pd.read_csv(out["mimic-iii"] / "NOTEEVENTS.csv", dtype=str, keep_default_na=False)
    ok = notes.ISERROR.str.strip() != "1"
    notes[ok].to_csv(root / "m3-as-omop.csv", index=False)
    iv = ok & notes.CATEGORY.str.strip().isin(["Discharge summary", "Radiology"])
    notes[iv].to_csv(root / "m3-as-mimic-iv.csv", index=False)
    custom = notes[ok].rename(columns={"ROW_ID": "nid", "SUBJECT_ID": "pt", "HADM_ID": "enc",
                                       "CHARTDATE": "written_at", "CATEGORY": "kind",
                                       "TEXT": "body"})
    custom[["nid", "pt", "enc", "written_at", "kind", "body"]].to_parquet(root / "export.parquet")
    out["m3-as-omop"] = root / "m3-as-omop.csv"
    out["m3-as-mimic-iv"] = root / "m3-as-mimic-iv.csv"
    out["export"] = root / "export.parquet"
    return out


def _build(notes, out: Path, model, **kw) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        build_index_from(notes, out_dir=out, model_dir=model,
                         encode=EncodeOptions(**ENCODE, columns=kw.pop("columns", None)),
                         build=BuildOptions(index_key="Flat"), progress=False, **kw)
    return out


def _run(*args, code: int = 0) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.stdout


# ---------------------------------------------------------------------------------------
# synth --layout


def test_synth_writes_the_same_patients_in_each_layout(tables):
    m3 = pd.read_csv(tables["mimic-iii"] / "NOTEEVENTS.csv")
    ds = pd.read_csv(tables["mimic-iv"] / "discharge.csv.gz")
    rr = pd.read_csv(tables["mimic-iv"] / "radiology.csv.gz")
    omop = pd.read_csv(tables["omop"] / "NOTE.csv")
    assert list(ds.columns) == list(rr.columns) == ["note_id", "subject_id", "hadm_id",
                                                    "note_type", "note_seq", "charttime",
                                                    "storetime", "text"]
    assert set(ds.note_type) <= {"DS", "AD"} and set(rr.note_type) == {"RR"}
    assert rr.hadm_id.isna().any() and not ds.hadm_id.isna().any()  # outpatient studies
    assert all(i == f"{s}-{t}-{q}" for i, s, t, q in
               zip(rr.note_id, rr.subject_id, rr.note_type, rr.note_seq))
    ok = m3[m3.ISERROR != 1]
    assert sorted(omop.note_text) == sorted(ok.TEXT)
    assert set(omop.person_id) == set(m3.SUBJECT_ID) == set(rr.subject_id) | set(ds.subject_id)
    kept = ok[ok.CATEGORY.str.strip().isin(["Discharge summary", "Radiology"])]
    assert sorted(pd.concat([ds.text, rr.text])) == sorted(kept.TEXT)

    d3 = pd.read_csv(tables["mimic-iii"] / "DIAGNOSES_ICD.csv", dtype=str)
    d4 = pd.read_csv(tables["mimic-iv"] / "diagnoses_icd.csv.gz", dtype=str)
    assert set(d4.icd_version) == {"9", "10"}  # MIMIC-IV mixes revisions
    assert [chapter(c) for c in d3.ICD9_CODE] == [
        chapter(c, int(v)) for c, v in zip(d4.icd_code, d4.icd_version)]


# ---------------------------------------------------------------------------------------
# One index per layout, the same answers


@pytest.fixture(scope="module")
def indexes(tables, minilm_onnx, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layout-indexes")
    m4 = tables["mimic-iv"]
    return {
        "mimic-iv": _build([m4 / "discharge.csv.gz", m4 / "radiology.csv.gz"], root / "iv",
                           minilm_onnx, diagnoses=m4 / "diagnoses_icd.csv.gz"),
        "m3-as-mimic-iv": _build(tables["m3-as-mimic-iv"], root / "iii-iv", minilm_onnx,
                                 diagnoses=tables["mimic-iii"] / "DIAGNOSES_ICD.csv"),
        "omop": _build(tables["omop"] / "NOTE.csv", root / "omop", minilm_onnx),
        "m3-as-omop": _build(tables["m3-as-omop"], root / "iii-omop", minilm_onnx),
        "export": _build(tables["export"], root / "export", minilm_onnx,
                         columns="id=nid,subject=pt,admission=enc,time=written_at,"
                                 "category=kind,text=body"),
    }


def _text_ids(s: Searcher) -> dict:
    """(patient, text) -> a note id (copied text: the first copy); ids differ between
    layouts, the notes do not."""
    out: dict = {}
    for n in s.notes(s.ids(), text=True):
        out.setdefault((str(n.subject), n.text), n.id)
    return out


def _answer(s: Searcher, hits) -> list[tuple]:
    """Hits as (patient, text, score), ties in any order."""
    notes = {n.id: n for n in s.notes([h.id for h in hits], text=True)}
    return sorted((str(h.subject), notes[h.id].text, round(h.score, 4)) for h in hits)


@pytest.mark.parametrize("layout,twin,category", [
    ("mimic-iv", "m3-as-mimic-iv", ("RR", "Radiology")),
    ("omop", "m3-as-omop", ("Nursing", "Nursing")),
    ("export", "m3-as-omop", ("Nursing", "Nursing")),
])
def test_every_layout_answers_as_mimic_iii_does(indexes, layout, twin, category):
    a, b = Searcher(indexes[layout]), Searcher(indexes[twin])
    ids_a, ids_b = _text_ids(a), _text_ids(b)
    assert set(ids_a) == set(ids_b)
    schema = a.index.store.schema
    assert None not in (schema.subject, schema.time, schema.category)
    patient = sorted(a.index.store.value_counts(schema.subject))[1]
    days = sorted(a.index.store.value_counts(schema.time))
    since = str(days[len(days) // 3])[:10]
    for key in list(ids_a)[:: max(1, len(ids_a) // 4)]:
        for mode in ("dense", "lexical"):
            got = [a.search_notes([ids_a[key]], 10, mode=mode)[0],
                   b.search_notes([ids_b[key]], 10, mode=mode)[0]]
            assert _answer(a, got[0]) == _answer(b, got[1]), (layout, mode)
        for fa, fb in ((Filters(subjects=[patient]), Filters(subjects=[patient])),
                       (Filters(since=since), Filters(since=since)),
                       (Filters(categories=[category[0]]), Filters(categories=[category[1]]))):
            got = [a.search_notes([ids_a[key]], 5, fa, mode="lexical")[0],
                   b.search_notes([ids_b[key]], 5, fb, mode="lexical")[0]]
            assert got[0] and _answer(a, got[0]) == _answer(b, got[1])
    pa_, pb = (s.similar_patients(subject_id=patient, k=5, mode="lexical") for s in (a, b))
    assert [(str(p.subject), round(p.score, 4), p.notes) for p in pa_] == \
        [(str(p.subject), round(p.score, 4), p.notes) for p in pb]
    calibrated = a.index.manifest.calibration
    assert calibrated.pairs >= 20 and calibrated.reason is None  # next-note pairs measured
    if layout == "omop":  # the same notes in the same time order: the same pairs measured
        assert calibrated.table == b.index.manifest.calibration.table


def test_mimic_iv_index_through_the_cli(indexes, tmp_path):
    ix = indexes["mimic-iv"]
    info = json.loads(_run("info", ix, "--json"))
    assert info["schema"]["layout"] == "mimic-iv-note"
    assert info["schema"]["roles"]["subject"] == "subject_id"
    s = Searcher(ix)
    note = s.notes(s.ids()[:1])[0]
    assert isinstance(note.id, str) and "-" in note.id  # MIMIC-IV's SUBJECT-TYPE-SEQ ids
    hits = json.loads(_run("query", ix, "--note-id", note.id, "--json", "-k", "3"))[0]["hits"]
    assert {"subject", "admission", "category", "time", "metadata"} <= set(hits[0])
    assert hits[0]["metadata"]["note_type"] == hits[0]["category"]
    got = json.loads(_run("query", ix, "chest x-ray effusion", "--subject", note.subject,
                          "--category", "rr", "--since", "2000-01-01", "--json"))[0]["hits"]
    assert got and {h["subject"] for h in got} == {note.subject}
    assert {h["category"] for h in got} == {"RR"}
    out = _run("patients", ix, "--subject", note.subject, "-k", "3", "--out",
               tmp_path / "cohort.csv")
    cohort = pd.read_csv(tmp_path / "cohort.csv")
    assert len(cohort) == 3 and note.subject not in cohort.subject.tolist(), out
    timeline = s.timeline(note.subject)
    times = [n.time for n in timeline]
    assert times == sorted(times)
    patient_search = s.index.manifest.calibration.patient_search
    assert patient_search and patient_search["patients"] > 0  # ICD-9 + ICD-10 chapters


def test_an_index_written_before_schemas_opens_as_mimic_iii(indexes, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(indexes["m3-as-omop"], old)
    m = json.loads((old / "manifest.json").read_text())
    del m["schema"]
    (old / "manifest.json").write_text(json.dumps(m))
    s = Searcher(old)
    assert s.index.store.schema.layout == "mimic-iii"
    assert s.index.store.schema.subject == "SUBJECT_ID"
    subject = s.notes(s.ids()[:1])[0].subject
    hits = s.search_texts(["pain"], 5, Filters(subjects=[subject]), mode="lexical")[0]
    assert hits and {h.subject for h in hits} == {subject}


def test_notes_of_another_layout_are_refused_by_add_and_sync(indexes, tables, tmp_path):
    """OMOP notes into a MIMIC-III index: their patient, admission and time columns are
    not the ones the index filters by, so they are refused before anything is encoded."""
    import shutil

    ix = tmp_path / "ix"
    shutil.copytree(indexes["m3-as-omop"], ix)
    before = sorted(p.name for p in ix.iterdir())
    for command in ("add", "sync"):
        result = CliRunner().invoke(main, [command, str(ix), str(tables["omop"] / "NOTE.csv"),
                                           "--no-progress"])
        assert result.exit_code == 2, result.output
        assert "subject is SUBJECT_ID in the index, person_id in the notes" in result.output
        assert sorted(p.name for p in ix.iterdir()) == before


# ---------------------------------------------------------------------------------------
# Training on MIMIC-IV-Note


def test_pairs_train_export_build_on_mimic_iv(tables, tiny_gemma_dir, tmp_path):
    m4 = tables["mimic-iv"]
    files = [m4 / "discharge.csv.gz", m4 / "radiology.csv.gz"]
    _run("pairs", *files, "--out", tmp_path / "pairs", "--val-fraction", "0.25",
         "--test-fraction", "0.25")
    manifest = json.loads((tmp_path / "pairs" / "manifest.json").read_text())
    assert manifest["schema"]["layout"] == "mimic-iv-note"
    assert {"discharge.csv.gz", "radiology.csv.gz", "diagnoses_icd.csv.gz"} == \
        set(manifest["sources"])  # the diagnoses beside the notes, found by themselves
    pairs = pd.read_parquet(tmp_path / "pairs" / "pairs.parquet")
    diag = pd.read_parquet(tmp_path / "pairs" / "diagnoses.parquet")
    assert set(diag.icd_version) == {9, 10} and pairs.chapters.map(len).gt(0).any()
    ten = set(diag.hadm_id[diag.icd_version == 10])
    assert pairs[pairs.anchor_hadm_id.isin(ten)].chapters.map(len).gt(0).all()
    _run("train", tiny_gemma_dir, "--data", tmp_path / "pairs", "--out", tmp_path / "run",
         "--batch-size", "4", "--max-steps", "1", "--max-seq-length", "32", "--loss",
         "hierarchical", "--device", "cpu", "--no-progress")
    _run("export", tmp_path / "run" / "model", "--out", tmp_path / "onnx")
    _run("build-index", *files, "--model", tmp_path / "onnx", "--out", tmp_path / "ix",
         "--diagnoses", m4 / "diagnoses_icd.csv.gz", "--no-progress")
    s = Searcher(tmp_path / "ix")
    note_id = s.ids()[0]
    assert s.search_notes([note_id], 3, mode="dense")[0]


def test_addenda_are_indexed_but_never_a_next_note(tmp_path, minilm_onnx):
    """A discharge summary's addendum (AD) is searchable, but neither pairs nor calibration
    pair it with the note it amends."""
    from mimicsearch.calibrate import next_note_pairs
    from mimicsearch.train.pairs import PairOptions, load_table, make_pairs

    rows = []
    for p in range(1, 4):
        for i, (kind, day) in enumerate([("RR", 1), ("DS", 2), ("AD", 2), ("RR", 3)], 1):
            rows.append([f"{p}-{kind}-{i}", p, 100 + p, kind, i, f"2180-01-0{day} 0{i}:00:00",
                         "", f"patient {p} {kind} note {i} " + "words " * 20])
    with gzip.open(tmp_path / "discharge.csv.gz", "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime",
                    "storetime", "text"])
        w.writerows(rows)
    make_pairs(tmp_path / "discharge.csv.gz", tmp_path / "pairs",
               options=PairOptions(val_fraction=0, test_fraction=0))
    pairs = load_table(tmp_path / "pairs", "pairs")
    assert not pairs.positive_row_id.str.contains("-AD-").any()
    assert not pairs.anchor_row_id.str.contains("-AD-").any()
    assert list(pairs.anchor_row_id[:2]) == ["1-RR-1", "1-DS-2"]
    ix = _build(tmp_path / "discharge.csv.gz", tmp_path / "ix", minilm_onnx, calibrate=False)
    s = Searcher(ix)
    assert "1-AD-3" in s.ids()
    anchors, nexts, _ = next_note_pairs(s.index.store)
    assert anchors and not any("-AD-" in i for i in anchors + nexts)


# ---------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written


def test_bad_input_is_one_line_exit_2_nothing_written(tables, minilm_onnx, tmp_path):
    nothing = tmp_path / "nothing.csv"
    nothing.write_text("nid,body\n1,a note\n")
    m4 = tables["mimic-iv"]
    dup = tmp_path / "dup.csv.gz"
    with gzip.open(m4 / "radiology.csv.gz", "rt") as src, gzip.open(dup, "wt") as f:
        lines = src.read().splitlines(keepends=True)
        f.write("".join(lines))
    bad_version = tmp_path / "diagnoses_icd.csv"
    bad_version.write_text("subject_id,hadm_id,seq_num,icd_code,icd_version\n1,2,1,4019,9\n"
                           "1,2,2,I10,11\n")
    cases = [
        ([nothing], [], "fit no known note layout"),
        ([tables["mimic-iii"] / "NOTEEVENTS.csv"], ["--columns", "subject=PATIENT"],
         "no column 'PATIENT'"),
        ([tables["mimic-iii"] / "NOTEEVENTS.csv"], ["--columns", "patient=SUBJECT_ID"],
         "unknown role 'patient'"),
        ([m4 / "radiology.csv.gz", dup], [], "is in both"),
        ([m4 / "radiology.csv.gz"], ["--diagnoses", bad_version], "line 3: icd_version '11'"),
    ]
    for notes, extra, message in cases:
        out = tmp_path / "ix"
        result = CliRunner().invoke(main, ["build-index", *map(str, notes), "--model",
                                           str(minilm_onnx), "--out", str(out),
                                           "--no-progress", *map(str, extra)])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1
        assert "Traceback" not in result.output
        assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    result = CliRunner().invoke(main, ["pairs", str(nothing), "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "fit no known note layout" in result.output
    assert not (tmp_path / "p").exists()


def test_columns_mapping_and_ambiguity(tmp_path):
    from mimicsearch.schema import SchemaError, detect

    s = detect(["nid", "pt", "body"], "x.csv", "id=nid,subject=pt,text=body")
    assert (s.layout, s.id, s.subject, s.text, s.time) == ("custom", "nid", "pt", "body", None)
    assert detect(["ROW_ID", "SUBJECT_ID", "TEXT"]).layout == "mimic-iii"
    assert detect(["note_id", "person_id", "note_text", "note_date"]).layout == "omop"
    iv = detect(["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime",
                 "storetime", "text"])
    assert (iv.layout, iv.time, iv.category, iv.addenda) == (
        "mimic-iv-note", "charttime", "note_type", ("AD", "AR"))
    with pytest.raises(SchemaError, match=r"fit mimic-iii and mimic-iv-note equally.*layout="):
        detect(["ROW_ID", "note_id", "TEXT", "text"])
    assert detect(["ROW_ID", "note_id", "TEXT", "text"], mapping="layout=omop,text=TEXT"
                  ).layout == "omop+columns"
    changed = detect(["note_id", "person_id", "note_text", "note_title"],
                     mapping="category=note_title")
    assert changed.category == "note_title" and changed.layout == "omop+columns"
    dropped = detect(["ROW_ID", "SUBJECT_ID", "CATEGORY", "TEXT"], mapping="category=")
    assert dropped.category is None


def test_several_files_reject_with_their_file(tables, minilm_onnx, tmp_path):
    m4 = tables["mimic-iv"]
    broken = tmp_path / "more.csv"
    with open(broken, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime",
                    "storetime", "text"])
        w.writerow(["9-RR-1", 9, "", "RR", 1, "2180-01-01 00:00:00", "", "a new report"])
        w.writerow(["9-RR-2", 9, "", "RR", 2, "2180-01-02 00:00:00", "", ""])
    out = _run("encode", m4 / "radiology.csv.gz", broken, "--model", minilm_onnx, "--out",
               tmp_path / "emb", "--max-length", "32", "--no-progress", "--json")
    summary = json.loads(out)
    rr = pd.read_csv(m4 / "radiology.csv.gz")
    assert summary["read"] == len(rr) + 2 and summary["rejected"] == 1
    rejects = pd.read_csv(tmp_path / "emb" / "rejects.csv", dtype=str)
    assert rejects.line.tolist() == [f"{broken}:3"] and rejects.id.tolist() == ["9-RR-2"]
    emb = pq.read_table(tmp_path / "emb" / sorted(p.name for p in (tmp_path / "emb").glob(
        "shard-*.parquet"))[0])
    assert emb.column("id").type == pa.string()
