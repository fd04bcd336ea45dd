"use strict";
// The search page: plain DOM, no build step, no third-party code. Text from the server is
// always inserted as text (textContent), never as HTML.
(function () {
  const $ = (id) => document.getElementById(id);
  const state = { info: null, key: sessionStorage.getItem("mimicsearch-key") || "",
                  lastQuery: null, timeline: [], noteId: null, terms: [] };

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (state.key) headers["Authorization"] = "Bearer " + state.key;
    const r = await fetch(path, { method, headers,
                                  body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (r.status === 401) { $("key-form").hidden = false; $("api-key").focus(); }
    if (!r.ok) {
      const msg = data && data.error ? data.error.message : ("HTTP " + r.status);
      throw new Error(msg);
    }
    return data;
  }

  function showError(e) { const box = $("error"); box.textContent = e ? e.message : ""; box.hidden = !e; }
  function el(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }

  function queryTerms(text) {
    const stop = new Set(["the", "and", "with", "for", "from", "that", "this", "was", "were", "has", "have", "are", "not", "but"]);
    return Array.from(new Set((text || "").toLowerCase().match(/[a-z0-9]{3,}/g) || []))
      .filter((t) => !stop.has(t));
  }

  // Text with every query term marked, built from text nodes and <mark> elements.
  function highlighted(text, terms) {
    const frag = document.createDocumentFragment();
    if (!text) return frag;
    if (!terms.length) { frag.append(text); return frag; }
    const escaped = terms.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    const re = new RegExp("\\b(" + escaped.join("|") + ")\\w*", "gi");
    let last = 0, m;
    while ((m = re.exec(text)) !== null) {
      frag.append(text.slice(last, m.index));
      frag.append(el("mark", null, m[0]));
      last = m.index + m[0].length;
    }
    frag.append(text.slice(last));
    return frag;
  }

  function badges(n) {
    const box = el("div", "badges");
    if (n.category) box.append(el("span", "badge cat", n.category));
    if (n.chartdate) box.append(el("span", "badge date", n.chartdate));
    if (n.subject_id !== null && n.subject_id !== undefined) box.append(el("span", "badge pt", "patient " + n.subject_id));
    if (n.hadm_id !== null && n.hadm_id !== undefined) box.append(el("span", "badge", "admission " + n.hadm_id));
    return box;
  }

  async function loadInfo() {
    try {
      state.info = await api("GET", "/info");
    } catch (e) { showError(e); return; }
    showError(null);
    const info = state.info;
    $("status").textContent = info.notes + " notes · " + info.model.id + (info.auth ? " · key required" : "");
    const modes = $("modes");
    modes.querySelectorAll("label").forEach((l) => l.remove());
    for (const mode of ["dense", "lexical", "hybrid"]) {
      const label = el("label");
      const input = el("input");
      input.type = "radio"; input.name = "mode"; input.value = mode;
      input.checked = mode === "dense";
      input.disabled = !info.modes.includes(mode);
      if (input.disabled) label.title = "this index has no lexical part";
      label.append(input, " " + mode);
      modes.append(label);
    }
    const facets = $("facets");
    facets.querySelectorAll("label").forEach((l) => l.remove());
    for (const [cat, count] of Object.entries(info.categories).sort((a, b) => b[1] - a[1])) {
      const label = el("label");
      const input = el("input");
      input.type = "checkbox"; input.name = "category"; input.value = cat;
      label.append(input, " " + cat + " ", el("span", "muted", "(" + count + ")"));
      facets.append(label);
    }
    facets.hidden = !Object.keys(info.categories).length;
    if (info.dates) { $("since").min = $("until").min = info.dates.min; $("since").max = $("until").max = info.dates.max; }
  }

  function filters() {
    const f = {};
    const cats = Array.from(document.querySelectorAll("input[name=category]:checked")).map((c) => c.value);
    if (cats.length) f.categories = cats;
    if ($("since").value) f.since = $("since").value;
    if ($("until").value) f.until = $("until").value;
    const subject = $("subject").value.trim();
    if (subject) f.subjects = [subject];
    const mode = document.querySelector("input[name=mode]:checked");
    f.mode = mode ? mode.value : "dense";
    f.k = parseInt($("k").value, 10);
    return f;
  }

  async function runSearch(query) {
    state.lastQuery = query;
    const body = Object.assign(filters(), query);
    $("results-head").textContent = "Searching…";
    $("hits").replaceChildren();
    let res;
    try { res = await api("POST", "/search", body); }
    catch (e) { showError(e); $("results-head").textContent = ""; return; }
    showError(null);
    state.terms = query.text ? queryTerms(query.text) : state.terms;
    const what = query.text ? "“" + query.text + "”" : "notes like note " + query.note_id;
    $("results-head").textContent = res.hits.length + " notes for " + what + " (" + res.mode + ", " + res.took_ms + " ms)";
    for (const h of res.hits) {
      const li = el("li");
      const top = el("div", "hit-top");
      const open = el("button", "link", "#" + h.rank + " · note " + h.id);
      open.type = "button";
      open.dataset.noteId = h.id;
      open.addEventListener("click", () => openNote(h.id));
      top.append(open, el("span", "score", "score " + h.score.toFixed(3)));
      const prov = Object.entries(h.retrievers).map(([r, v]) => r + " " + (v.rank === null ? "not in top" : "rank " + v.rank) + (v.score === null ? "" : " (" + v.score.toFixed(3) + ")")).join(" · ");
      li.append(top, badges(h), el("span", "provenance", prov));
      const snip = el("p", "snippet");
      snip.append(highlighted(h.snippet || "", query.text ? state.terms : []));
      li.append(snip);
      $("hits").append(li);
    }
  }

  async function openNote(id) {
    let note, tl;
    try {
      note = await api("GET", "/notes/" + encodeURIComponent(id));
      tl = note.subject_id === null ? { notes: [note] }
        : await api("GET", "/patients/" + encodeURIComponent(note.subject_id) + "/timeline");
    } catch (e) { showError(e); return; }
    showError(null);
    state.noteId = note.id;
    state.timeline = tl.notes;
    $("note").hidden = false;
    document.querySelector(".panes").classList.add("reading");
    $("note-title").textContent = "Note " + note.id + (note.category ? " · " + note.category : "");
    $("note-badges").replaceChildren(...badges(note).childNodes);
    const text = $("note-text");
    text.replaceChildren(highlighted(note.text !== null ? note.text : (note.snippet || "") + " … (this index keeps only openings)", state.terms));
    const pos = tl.notes.findIndex((n) => String(n.id) === String(note.id));
    $("timeline-pos").textContent = "note " + (pos + 1) + " of " + tl.notes.length + " for this patient";
    $("prev-note").disabled = pos <= 0;
    $("next-note").disabled = pos < 0 || pos >= tl.notes.length - 1;
    const list = $("timeline");
    list.replaceChildren();
    tl.notes.forEach((n, i) => {
      const li = el("li", i === pos ? "current" : "");
      const b = el("button", "link", (n.chartdate || "undated") + " · " + (n.category || "note") + " · " + n.id);
      b.type = "button";
      if (i === pos) b.setAttribute("aria-current", "true");
      b.addEventListener("click", () => openNote(n.id));
      li.append(b);
      list.append(li);
    });
    $("note-title").focus();
  }

  function step(delta) {
    const pos = state.timeline.findIndex((n) => String(n.id) === String(state.noteId));
    const next = state.timeline[pos + delta];
    if (next) openNote(next.id);
  }

  function closeNote() {
    $("note").hidden = true;
    document.querySelector(".panes").classList.remove("reading");
    $("q").focus();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("search-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const text = $("q").value.trim();
      if (!text) { showError(new Error("Type a question or a passage to search for.")); return; }
      runSearch({ text });
    });
    $("facets").addEventListener("change", () => { if (state.lastQuery) runSearch(state.lastQuery); });
    $("key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      state.key = $("api-key").value.trim();
      sessionStorage.setItem("mimicsearch-key", state.key);
      $("key-form").hidden = true;
      loadInfo();
    });
    $("prev-note").addEventListener("click", () => step(-1));
    $("next-note").addEventListener("click", () => step(1));
    $("close-note").addEventListener("click", closeNote);
    $("more-like").addEventListener("click", () => {
      const q = { note_id: state.noteId };
      if ($("others").checked) q.other_patients_only = true;
      runSearch(q);
    });
    document.addEventListener("keydown", (ev) => {
      const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
      if (ev.key === "/" && !typing) { ev.preventDefault(); $("q").focus(); }
      else if (ev.key === "Escape" && !$("note").hidden) closeNote();
      else if (!typing && !$("note").hidden && ev.key === "ArrowLeft") step(-1);
      else if (!typing && !$("note").hidden && ev.key === "ArrowRight") step(1);
    });
    loadInfo();
  });
})();
