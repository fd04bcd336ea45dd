"""The search page in headless Chromium (Debian's `chromium`, driven by Playwright) against a
live server: search, a category filter, a note with its timeline, more like this, the
keyboard, the API-key prompt; no console errors (a CSP violation is one). Saves the
screenshot the README shows when MIMICSEARCH_UPDATE_SCREENSHOT=1."""
from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

from fixtures.server import start, stop

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "serve-page.png"


def chromium() -> str:
    path = os.environ.get("MIMICSEARCH_CHROMIUM") or shutil.which("chromium") or \
        shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Chromium for the page test: apt-get install -y chromium")
        pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    return path


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    context.close()


def test_search_filter_read_step_and_more_like_this(page, serve_index, serve_notes, tmp_path):
    notes = pd.read_csv(serve_notes[0])
    served = start(serve_index, tmp_path / "log")
    try:
        page.goto(served.url + "/")
        sync_api.expect(page.locator("#status")).to_contain_text("240 notes")
        sync_api.expect(page.locator(".banner")).to_contain_text("Research use only")

        page.keyboard.press("/")
        assert page.evaluate("document.activeElement.id") == "q"
        page.keyboard.type("pleural effusion, shortness of breath, furosemide")
        page.keyboard.press("Enter")
        hits = page.locator("#hits li")
        sync_api.expect(hits.first).to_be_visible()
        assert hits.count() == 20
        sync_api.expect(page.locator("#results-head")).to_contain_text("20 notes for")
        assert page.locator("#hits mark").count() > 0  # query terms highlighted

        page.locator("input[name=category][value=Radiology]").check()
        sync_api.expect(page.locator("#results-head")).to_contain_text("notes for")
        page.wait_for_function("document.querySelectorAll('#hits li').length > 0 && "
                               "[...document.querySelectorAll('#hits .badge.cat')]"
                               ".every(b => b.textContent === 'Radiology')")
        cats = page.locator("#hits .badge.cat").all_text_contents()
        assert cats and set(cats) == {"Radiology"}

        first = page.locator("#hits li button.link").first
        note_id = int(first.get_attribute("data-note-id"))
        first.click()
        sync_api.expect(page.locator("#note")).to_be_visible()
        sync_api.expect(page.locator("#note-title")).to_contain_text(f"Note {note_id}")
        row = notes[notes.ROW_ID == note_id].iloc[0]
        assert page.locator("#note-text").text_content() == row.TEXT
        assert page.evaluate("document.activeElement.id") == "note-title"
        timeline = page.locator("#timeline li")
        assert timeline.count() == int((notes.SUBJECT_ID == row.SUBJECT_ID).sum())
        if SCREENSHOT.parent.is_dir() and os.environ.get("MIMICSEARCH_UPDATE_SCREENSHOT"):
            page.screenshot(path=str(SCREENSHOT), full_page=False)
        page.screenshot(path=str(tmp_path / "page.png"))

        position = page.locator("#timeline-pos").text_content()
        step = "#next-note" if page.locator("#next-note").is_enabled() else "#prev-note"
        page.locator(step).click()
        sync_api.expect(page.locator("#timeline-pos")).not_to_have_text(position)
        stepped = int(re.search(r"Note (\d+)", page.locator("#note-title").text_content())[1])
        assert stepped != note_id
        assert (notes[notes.ROW_ID == stepped].SUBJECT_ID == row.SUBJECT_ID).all()
        page.keyboard.press("ArrowRight" if step == "#prev-note" else "ArrowLeft")
        sync_api.expect(page.locator("#note-title")).to_contain_text(f"Note {note_id}")

        page.locator("#others").check()
        page.locator("#more-like").click()
        sync_api.expect(page.locator("#results-head")).to_contain_text(f"like note {note_id}")
        patients = page.locator("#hits .badge.pt").all_text_contents()
        assert patients and f"patient {row.SUBJECT_ID}" not in patients

        page.keyboard.press("Escape")
        sync_api.expect(page.locator("#note")).to_be_hidden()
        assert page.errors == []
    finally:
        stop(served)


def test_key_prompt(page, serve_index, tmp_path):
    key = "page-test-key-0123456789"
    (tmp_path / "key").write_text(key)
    (tmp_path / "key").chmod(0o600)
    served = start(serve_index, tmp_path / "log", "--api-key-file", str(tmp_path / "key"))
    try:
        page.goto(served.url + "/")
        sync_api.expect(page.locator("#key-form")).to_be_visible()
        page.locator("#api-key").fill(key)
        page.locator("#key-form button").click()
        sync_api.expect(page.locator("#status")).to_contain_text("key required")
        page.locator("#q").fill("renal failure")
        page.keyboard.press("Enter")
        sync_api.expect(page.locator("#hits li").first).to_be_visible()
        assert [e for e in page.errors if "401" not in e] == []
    finally:
        stop(served)


def accessible(page) -> None:
    """axe-core (the copy the axe-playwright-python package ships) finds no serious or
    critical violation on the page as it is now."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
           for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert bad == [], bad


def test_patients_course_cohort_export_url_and_back(page, browser, serve_index, tmp_path):
    """Search, switch to patients (the API's answer), open a patient's course, click a hit
    mark (its note opens), select 5 patients, export CSV (the API's cohort), load the URL in
    a fresh page (the same state), step back through the searches; accessible throughout."""
    import httpx

    served = start(serve_index, tmp_path / "log")
    query = "chest pain, troponin rising, started on heparin"
    try:
        page.goto(served.url + "/")
        sync_api.expect(page.locator("#status")).to_contain_text("240 notes")
        assert page.locator("input[name=mode][value=auto]").is_checked()
        page.locator("#q").fill(query)
        page.keyboard.press("Enter")
        sync_api.expect(page.locator("#hits li").first).to_be_visible()
        sync_api.expect(page.locator("#hitchart")).to_be_visible()
        chose = httpx.get(served.url + "/info").json()["auto"]["notes"]["setting"]
        sync_api.expect(page.locator("#results-head")).to_contain_text(f"auto: {chose}")
        assert page.locator("#by-category .bar").count() > 0
        accessible(page)

        page.locator("#views [data-view=patients]").click()
        rows = page.locator("#patient-list > li")
        sync_api.expect(rows.first).to_be_visible()
        request = {"text": query, "k": 20}  # the API's default mode, auto, as the page's
        answer = httpx.post(served.url + "/patients/search", json=request).json()["patients"]
        subjects = [p["subject"] for p in answer]
        assert len(subjects) == 6 and [int(r.get_attribute("data-subject-id"))
                                       for r in rows.all()] == subjects
        assert rows.first.locator(".matches li").count() == len(answer[0]["matches"])
        assert "view=patients" in page.url and "q=" in page.url
        accessible(page)

        rows.nth(1).locator("button.open-patient").click()
        sync_api.expect(page.locator("#note-title")).to_contain_text(f"Patient {subjects[1]}")
        marks = page.locator("#course .mark.hit")
        assert marks.count() >= len(answer[1]["matches"]) > 0
        hit = marks.first.get_attribute("data-note-id")
        assert int(hit) in {m["id"] for p in answer for m in p["matches"]}
        marks.first.click()
        sync_api.expect(page.locator("#note-title")).to_contain_text(f"Note {hit}")
        sync_api.expect(page.locator("#course .mark.current")).to_have_count(1)
        assert page.locator("#course .mark.current").get_attribute("data-note-id") == hit
        accessible(page)
        if SCREENSHOT.parent.is_dir() and os.environ.get("MIMICSEARCH_UPDATE_SCREENSHOT"):
            page.screenshot(path=str(SCREENSHOT.parent / "page-patients.png"))

        page.locator("#top-n").fill("5")
        page.locator("#select-top").click()
        sync_api.expect(page.locator("#cohort-count")).to_have_text("(5)")
        page.locator("#views [data-view=cohort]").click()
        sync_api.expect(page.locator("#cohort-table tbody tr")).to_have_count(5)
        page.locator("#cohort-name").fill("troponin five")
        page.locator("#cohort-name").press("Tab")
        with page.expect_download() as download:
            page.locator("#export-csv").click()
        assert download.value.suggested_filename == "troponin-five.csv"
        exported = pd.read_csv(download.value.path())
        api = pd.read_csv(io.BytesIO(httpx.post(served.url + "/cohorts/export", json={
            **request, "select": subjects[:5], "name": "troponin five"}).content))
        assert exported.subject.tolist() == api.subject.tolist() == subjects[:5]
        assert exported.drop(columns="exported_at").equals(api.drop(columns="exported_at"))
        accessible(page)
        if SCREENSHOT.parent.is_dir() and os.environ.get("MIMICSEARCH_UPDATE_SCREENSHOT"):
            page.screenshot(path=str(SCREENSHOT.parent / "page-cohort.png"))

        shared = page.url
        fresh = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        fresh_errors: list[str] = []
        fresh.on("console", lambda m: fresh_errors.append(m.text) if m.type == "error" else None)
        fresh.goto(shared)
        sync_api.expect(fresh.locator("#cohort-table tbody tr")).to_have_count(5)
        assert fresh.locator("#cohort-table tbody th").all_text_contents() == [
            str(s) for s in subjects[:5]]
        sync_api.expect(fresh.locator("#note-title")).to_contain_text(f"Note {hit}")
        assert fresh.locator("#cohort-name").input_value() == "troponin five"
        assert fresh_errors == []
        fresh.context.close()

        page.go_back()  # the cohort view's entry back to the patients view
        sync_api.expect(page.locator("#patients")).to_be_visible()
        sync_api.expect(page.locator("#cohort")).to_be_hidden()
        for _ in range(12):  # back through the notes and patients opened, to the search
            if "view=notes" in page.url:
                break
            page.go_back()
        sync_api.expect(page.locator("#results")).to_be_visible()
        sync_api.expect(page.locator("#hits li")).to_have_count(20)
        assert page.locator("#q").input_value() == query
        assert page.errors == []
    finally:
        stop(served)


def test_keyboard_reaches_every_new_control(page, serve_index, tmp_path):
    """Tab reaches the views, a patient's checkbox and a chart mark; Enter on a mark opens
    its note; focus is visible on each."""
    served = start(serve_index, tmp_path / "log")
    try:
        page.goto(served.url + "/?view=patients&q=renal+failure&mode=lexical&k=10")
        rows = page.locator("#patient-list > li")
        sync_api.expect(rows.first).to_be_visible()
        sync_api.expect(page.locator("#views [data-view=patients]")).to_have_attribute(
            "aria-pressed", "true")
        seen = set()
        for _ in range(60):
            page.keyboard.press("Tab")
            seen.add(page.evaluate("(document.activeElement.dataset.view || "
                                   "document.activeElement.className || '').toString()"))
        assert {"notes", "patients", "cohort"} <= seen and "pick" in seen
        rows.first.locator("button.open-patient").click()
        mark = page.locator("#course .mark").first
        mark.focus()
        outline = page.evaluate("getComputedStyle(document.activeElement.querySelector("
                                "'circle:last-of-type')).strokeWidth")
        assert outline == "3px"
        note = mark.get_attribute("data-note-id")
        page.keyboard.press("Enter")
        sync_api.expect(page.locator("#note-title")).to_contain_text(f"Note {note}")
        assert page.errors == []
    finally:
        stop(served)


@pytest.fixture(scope="module")
def mimic_iv_index(minilm_onnx, tmp_path_factory) -> Path:
    """MIMIC-IV-Note's two tables (string note ids, timestamps, note types) and its ICD-9 +
    ICD-10 diagnoses, indexed."""
    import warnings

    from mimicsearch.index import BuildOptions
    from mimicsearch.options import EncodeOptions
    from mimicsearch.pipeline import TruncationWarning, build_index_from
    from mimicsearch.synth.layouts import write_layout

    root = tmp_path_factory.mktemp("mimic-iv-page")
    write_layout(6, root / "data", "mimic-iv", seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        build_index_from([root / "data" / "discharge.csv.gz", root / "data" / "radiology.csv.gz"],
                         out_dir=root / "ix", model_dir=minilm_onnx,
                         encode=EncodeOptions(max_length=64, snippets=True, full_text=True),
                         build=BuildOptions(index_key="Flat"), progress=False,
                         diagnoses=root / "data" / "diagnoses_icd.csv.gz")
    return root / "ix"


def test_mimic_iv_facets_dates_and_a_patients_timeline(page, mimic_iv_index, tmp_path):
    """The page on a MIMIC-IV-Note index: note types as facets, dates from charttime, string
    note ids, a patient's timeline and course, the patients view."""
    import httpx

    served = start(mimic_iv_index, tmp_path / "log")
    try:
        info = httpx.get(served.url + "/info").json()
        assert info["schema"]["layout"] == "mimic-iv-note"
        page.goto(served.url + "/")
        sync_api.expect(page.locator("#status")).to_contain_text(f"{info['notes']} notes")
        facets = page.locator("#facets input[name=category]")
        assert sorted(f.get_attribute("value") for f in facets.all()) == ["DS", "RR"]
        assert page.locator("#since").get_attribute("min") == info["dates"]["min"][:10]

        page.locator("#q").fill("chest x-ray pleural effusion")
        page.keyboard.press("Enter")
        sync_api.expect(page.locator("#hits li").first).to_be_visible()
        page.locator("input[name=category][value=RR]").check()
        page.wait_for_function("document.querySelectorAll('#hits li').length > 0 && "
                               "[...document.querySelectorAll('#hits .badge.cat')]"
                               ".every(b => b.textContent === 'RR')")
        assert page.locator("#hits .badge.date").count() > 0
        assert page.locator("#by-year .bar").count() > 0

        first = page.locator("#hits li button.link").first
        note_id = first.get_attribute("data-note-id")
        assert "-RR-" in note_id  # MIMIC-IV's string ids
        first.click()
        sync_api.expect(page.locator("#note-title")).to_contain_text(f"Note {note_id}")
        subject = int(note_id.split("-")[0])
        timeline = httpx.get(f"{served.url}/patients/{subject}/timeline").json()
        assert timeline["subject"] == subject
        sync_api.expect(page.locator("#timeline li")).to_have_count(timeline["count"])
        times = [n["time"] for n in timeline["notes"]]
        assert times == sorted(times)

        page.locator("#open-patient").click()
        sync_api.expect(page.locator("#note-title")).to_contain_text(f"Patient {subject}")
        assert page.locator("#course .mark").count() == timeline["count"]

        page.locator("#views [data-view=patients]").click()
        sync_api.expect(page.locator("#patient-list > li").first).to_be_visible()
        assert page.errors == []
    finally:
        stop(served)
