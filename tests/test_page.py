"""The search page in headless Chromium (Debian's `chromium`, driven by Playwright) against a
live server: search, a category filter, a note with its timeline, more like this, the
keyboard, the API-key prompt; no console errors (a CSP violation is one). Saves the
screenshot the README shows when MIMICSEARCH_UPDATE_SCREENSHOT=1."""
from __future__ import annotations

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
