"use strict";
// The search page: plain DOM, no build step, no third-party code. Text from the server is
// always inserted as text (textContent), never as HTML. Charts are SVG drawn here.
// The URL holds the page's state (query, mode, filters, k, view, open note or patient,
// the cohort's patients), so a search can be bookmarked or sent, and Back steps through.
(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";  // the SVG namespace (an identifier, not a fetch)
  const PALETTE = ["#1f6fb2", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0e7490",
                   "#a16207", "#be185d", "#4d7c0f", "#475569", "#9333ea", "#0369a1"];
  const state = { info: null, key: sessionStorage.getItem("mimicsearch-key") || "",
                  view: "notes", query: null, timeline: [], noteId: null, patientId: null,
                  terms: [], hitIds: new Set(), patients: [], patientRequest: null,
                  cohort: { request: null, selected: [] }, restoring: false };

  async function api(method, path, body, raw) {
    const headers = { "Accept": raw ? "*/*" : "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (state.key) headers["Authorization"] = "Bearer " + state.key;
    const r = await fetch(path, { method, headers,
                                  body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status === 401) { $("key-form").hidden = false; $("api-key").focus(); }
    if (raw && r.ok) return r;
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) {
      const msg = data && data.error ? data.error.message : ("HTTP " + r.status);
      throw new Error(msg);
    }
    return data;
  }

  function showError(e) { const box = $("error"); box.textContent = e ? e.message : ""; box.hidden = !e; }
  function announce(text) { $("announce").textContent = text; }
  function el(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }
  function svg(tag, attrs) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
    return n;
  }
  function button(text, cls, onClick) {
    const b = el("button", cls, text);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }
  // An SVG mark that acts as a button: focusable, Enter/Space or a click run `onClick`.
  function clickable(node, label, onClick) {
    node.setAttribute("tabindex", "0");
    node.setAttribute("role", "button");
    node.setAttribute("aria-label", label);
    const title = svg("title");
    title.textContent = label;
    node.append(title);
    node.addEventListener("click", onClick);
    node.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); onClick(); }
    });
    return node;
  }

  function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

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
    if (n.time) box.append(el("span", "badge date", n.time));
    if (n.subject !== null && n.subject !== undefined) box.append(el("span", "badge pt", "patient " + n.subject));
    if (n.admission !== null && n.admission !== undefined) box.append(el("span", "badge", "admission " + n.admission));
    return box;
  }

  function provenance(retrievers) {
    return Object.entries(retrievers).map(([r, v]) => r + " " + (v.rank === null ? "not in top" : "rank " + v.rank) + (v.score === null ? "" : " (" + v.score.toFixed(3) + ")")).join(" · ");
  }

  function colorOf(category) {
    const cats = Object.keys((state.info && state.info.categories) || {}).sort();
    const i = cats.indexOf(category);
    return i < 0 ? "#6b7280" : PALETTE[i % PALETTE.length];
  }

  async function loadInfo() {
    try {
      state.info = await api("GET", "/info");
    } catch (e) { showError(e); return false; }
    showError(null);
    const info = state.info;
    $("status").textContent = info.notes + " notes · " + info.model.id + (info.auth ? " · key required" : "");
    const modes = $("modes");
    modes.querySelectorAll("label").forEach((l) => l.remove());
    for (const mode of ["auto", "dense", "lexical", "hybrid"]) {
      const label = el("label");
      const input = el("input");
      input.type = "radio"; input.name = "mode"; input.value = mode;
      input.checked = mode === "auto";
      input.disabled = !info.modes.includes(mode);
      if (input.disabled) label.title = "this index has no lexical part";
      if (mode === "auto" && info.auto) label.title = "notes: " + autoText(info.auto.notes) + "; patients: " + autoText(info.auto.patients);
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
    if (info.dates) { $("since").min = $("until").min = String(info.dates.min).slice(0, 10); $("since").max = $("until").max = String(info.dates.max).slice(0, 10); }
    return true;
  }

  // ---- the request: filters from the controls, the query from the state ----
  function filters() {
    const f = {};
    const cats = Array.from(document.querySelectorAll("input[name=category]:checked")).map((c) => c.value);
    if (cats.length) f.categories = cats;
    if ($("since").value) f.since = $("since").value;
    if ($("until").value) f.until = $("until").value;
    const subject = $("subject").value.trim();
    if (subject) f.subjects = [subject];
    const mode = document.querySelector("input[name=mode]:checked");
    f.mode = mode ? mode.value : "auto";
    f.k = parseInt($("k").value, 10);
    return f;
  }

  function describe(query) {
    if (query.text) return "“" + query.text + "”";
    if (query.note_id !== undefined) return "note " + query.note_id;
    return "patient " + query.subject_id;
  }

  // ---- URL state ----
  function toUrl() {
    const p = new URLSearchParams();
    p.set("view", state.view);
    const q = state.query;
    if (q && q.text) p.set("q", q.text);
    if (q && q.note_id !== undefined) p.set("like_note", q.note_id);
    if (q && q.subject_id !== undefined) p.set("like_patient", q.subject_id);
    const f = filters();
    p.set("mode", f.mode); p.set("k", f.k);
    (f.categories || []).forEach((c) => p.append("category", c));
    if (f.since) p.set("since", f.since);
    if (f.until) p.set("until", f.until);
    if (f.subjects) p.set("subject", f.subjects[0]);
    if ($("others").checked) p.set("others", "1");
    if (state.noteId !== null) p.set("note", state.noteId);
    else if (state.patientId !== null) p.set("patient", state.patientId);
    if (state.cohort.selected.length) p.set("cohort", state.cohort.selected.join(","));
    if ($("cohort-name").value && $("cohort-name").value !== "cohort") p.set("name", $("cohort-name").value);
    return "?" + p.toString();
  }

  // A new entry for a search, a view or an opened note; `replace` for edits that are no
  // new step (a selection, the cohort's name), so Back steps through searches.
  function remember(replace) {
    if (state.restoring) return;
    const url = toUrl();
    if (url === location.search) return;
    if (replace) history.replaceState(null, "", url);
    else history.pushState(null, "", url);
  }

  // What "auto" chose on this index and what it measured, in words.
  function autoText(a) {
    if (!a) return "";
    if (!a.calibrated) return a.setting + " (" + a.why + ")";
    if (a["recall@10"] !== undefined) return a.setting + ", measured next-note R@5 " + a["recall@5"].toFixed(3) + ", R@10 " + a["recall@10"].toFixed(3) + " on " + a.pairs + " pairs";
    return a.setting + ", measured " + a.measure + " " + a.score.toFixed(3) + " on " + a.patients + " patients";
  }

  function ranBy(res) {
    return res.auto ? "auto: " + autoText(res.auto) : res.setting;
  }

  async function restore() {
    const p = new URLSearchParams(location.search);
    state.restoring = true;
    try {
      $("q").value = p.get("q") || "";
      const mode = document.querySelector("input[name=mode][value='" + (p.get("mode") || "auto") + "']");
      if (mode && !mode.disabled) mode.checked = true;
      const k = p.get("k");
      if (k && Array.from($("k").options).some((o) => o.value === k)) $("k").value = k;
      const cats = new Set(p.getAll("category"));
      document.querySelectorAll("input[name=category]").forEach((c) => { c.checked = cats.has(c.value); });
      $("since").value = p.get("since") || "";
      $("until").value = p.get("until") || "";
      $("subject").value = p.get("subject") || "";
      $("others").checked = p.get("others") === "1";
      $("cohort-name").value = p.get("name") || "cohort";
      const query = p.get("q") ? { text: p.get("q") }
        : p.get("like_note") ? { note_id: idOf(p.get("like_note")) }
        : p.get("like_patient") ? { subject_id: idOf(p.get("like_patient")) } : null;
      if (query && query.note_id !== undefined && $("others").checked) query.other_patients_only = true;
      const selected = (p.get("cohort") || "").split(",").filter(Boolean).map(idOf);
      await show(p.get("view") || "notes", query, selected);
      if (p.get("note")) await openNote(idOf(p.get("note")));
      else if (p.get("patient")) await openPatient(idOf(p.get("patient")));
      else closeDetail(false);
    } finally { state.restoring = false; }
  }

  function idOf(text) { return /^-?\d+$/.test(text) ? parseInt(text, 10) : text; }

  // ---- views ----
  function setView(view) {
    state.view = view;
    document.querySelectorAll("#views .view").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.view === view)));
    $("results").hidden = view !== "notes";
    $("patients").hidden = view !== "patients";
    $("cohort").hidden = view !== "cohort";
    if (view !== "notes") $("hitchart").hidden = true;
  }

  // Show `view` for `query` (null: as the page has it), searching as the view needs.
  async function show(view, query, selected) {
    setView(view);
    if (query !== undefined) state.query = query;
    if (view === "notes" && state.query) await runSearch(state.query);
    if (view === "patients" && state.query) await runPatients(state.query, selected);
    if (view === "cohort") {
      if (selected && selected.length && state.query) await runPatients(state.query, selected, true);
      renderCohort();
    }
  }

  // ---- notes ----
  async function runSearch(query) {
    state.query = query;
    if (query.subject_id !== undefined) {
      $("hits").replaceChildren();
      $("results-head").textContent = "A patient query ranks patients: see the patients view.";
      return;
    }
    const body = Object.assign(filters(), query);
    if (query.note_id !== undefined && $("others").checked) body.other_patients_only = true;
    $("results-head").textContent = "Searching…";
    $("hits").replaceChildren();
    let res;
    try { res = await api("POST", "/search", body); }
    catch (e) { showError(e); $("results-head").textContent = ""; return; }
    showError(null);
    state.terms = query.text ? queryTerms(query.text) : state.terms;
    state.hitIds = new Set(res.hits.map((h) => String(h.id)));
    const what = query.text ? "“" + query.text + "”" : "notes like note " + query.note_id;
    $("results-head").textContent = res.hits.length + " notes for " + what + " (" + ranBy(res) + ", " + res.took_ms + " ms)";
    for (const h of res.hits) {
      const li = el("li");
      const top = el("div", "hit-top");
      const open = button("#" + h.rank + " · note " + h.id, "link", () => openNote(h.id));
      open.dataset.noteId = h.id;
      top.append(open, el("span", "score", "score " + h.score.toFixed(3)));
      li.append(top, badges(h), el("span", "provenance", provenance(h.retrievers)));
      const snip = el("p", "snippet");
      snip.append(highlighted(h.snippet || "", query.text ? state.terms : []));
      li.append(snip);
      $("hits").append(li);
    }
    drawHitChart(res.hits);
    remember();
  }

  // Bars of where the hits fall, by category and by year; a bar narrows the search to it.
  function drawHitChart(hits) {
    const box = $("hitchart");
    box.hidden = !hits.length;
    const count = (key) => {
      const m = new Map();
      hits.forEach((h) => { const k = key(h); if (k) m.set(k, (m.get(k) || 0) + 1); });
      return m;
    };
    const byCat = Array.from(count((h) => h.category)).sort((a, b) => b[1] - a[1]);
    const byYear = Array.from(count((h) => h.time ? String(h.time).slice(0, 4) : null)).sort();
    $("by-category").replaceChildren(bars(byCat, "by-cat-title", (cat) => cat + ": ", (cat) => {
      document.querySelectorAll("input[name=category]").forEach((c) => { c.checked = c.value === cat; });
      runSearch(state.query);
    }, (cat) => colorOf(cat)));
    $("by-year").replaceChildren(bars(byYear, "by-year-title", (y) => y + ": ", (y) => {
      $("since").value = y + "-01-01"; $("until").value = y + "-12-31";
      runSearch(state.query);
    }, () => "#1f6fb2"));
  }

  function bars(entries, titleId, label, onPick, color) {
    const rowH = 18, width = 320, labelW = 120;
    const max = Math.max(1, ...entries.map((e) => e[1]));
    const chart = svg("svg", { viewBox: "0 0 " + width + " " + Math.max(rowH, entries.length * rowH),
                                width: width, height: Math.max(rowH, entries.length * rowH),
                                role: "group", "aria-labelledby": titleId, class: "bars" });
    entries.forEach(([key, n], i) => {
      const g = svg("g", { class: "bar", transform: "translate(0," + i * rowH + ")" });
      const text = svg("text", { x: 0, y: 13, class: "bar-label" });
      text.textContent = key.length > 18 ? key.slice(0, 17) + "…" : key;
      const w = Math.max(2, (width - labelW - 30) * n / max);
      g.append(text, svg("rect", { x: labelW, y: 3, width: w, height: rowH - 6, fill: color(key) }));
      const value = svg("text", { x: labelW + w + 4, y: 13, class: "bar-label" });
      value.textContent = n;
      g.append(value);
      clickable(g, label(key) + n + " hits; show only these", () => onPick(key));
      g.dataset.key = key;
      chart.append(g);
    });
    return chart;
  }

  // ---- patients ----
  function patientRequest(query) {
    const f = filters();
    const body = Object.assign({}, f, query);
    delete body.other_patients_only;
    return body;
  }

  async function runPatients(query, selected, quiet) {
    state.query = query;
    const body = patientRequest(query);
    const list = $("patient-list");
    $("patients-head").textContent = "Searching patients…";
    list.replaceChildren();
    let res;
    try { res = await api("POST", "/patients/search", body); }
    catch (e) { showError(e); $("patients-head").textContent = ""; return; }
    showError(null);
    state.terms = query.text ? queryTerms(query.text) : state.terms;
    state.patients = res.patients;
    state.patientRequest = body;
    state.hitIds = new Set(res.patients.flatMap((p) => p.matches.map((m) => String(m.id))));
    const keep = new Set((selected || []).map(String));
    state.cohort = { request: body, selected: res.patients.filter((p) => keep.has(String(p.subject))).map((p) => p.subject) };
    $("patients-head").textContent = res.patients.length + " patients like " + describe(query) + " (" + ranBy(res) + ", " + res.took_ms + " ms)";
    $("select-bar").hidden = !res.patients.length;
    $("top-n").max = res.patients.length;
    res.patients.forEach((p) => list.append(patientRow(p, query)));
    updateCohortCount();
    if (!quiet) remember();
  }

  function patientRow(p, query) {
    const li = el("li", "patient");
    li.dataset.subjectId = p.subject;
    const top = el("div", "hit-top");
    const check = el("input");
    check.type = "checkbox"; check.className = "pick"; check.id = "pick-" + p.subject;
    check.checked = state.cohort.selected.map(String).includes(String(p.subject));
    check.addEventListener("change", () => select([p.subject], check.checked));
    const label = el("label", "sr-only", "Select patient " + p.subject + " for the cohort");
    label.htmlFor = check.id;
    const open = button("#" + p.rank + " · patient " + p.subject, "link open-patient", () => openPatient(p.subject));
    top.append(check, label, open, el("span", "score", "score " + p.score.toFixed(3)),
               button("Similar patients", "small similar", () => similarTo({ subject_id: p.subject })));
    const facts = el("div", "badges");
    facts.append(el("span", "badge", plural(p.notes, "note") + " judged"),
                 el("span", "badge date", p.first_date === p.last_date ? (p.first_date || "undated") : p.first_date + " – " + p.last_date),
                 el("span", "badge", plural(p.admissions.length, "admission")));
    p.categories.forEach((c) => facts.append(el("span", "badge cat", c)));
    const evidence = el("ol", "matches");
    p.matches.forEach((m) => {
      const row = el("li");
      const b = button("note " + m.id + (m.category ? " · " + m.category : "") + (m.time ? " · " + m.time : ""), "link", () => openNote(m.id));
      b.dataset.noteId = m.id;
      const snip = el("span", "snippet");
      snip.append(" ", highlighted(m.snippet || "", query.text ? state.terms : []));
      row.append(b, snip);
      evidence.append(row);
    });
    li.append(top, facts, el("span", "provenance", provenance(p.retrievers)), evidence);
    return li;
  }

  function select(subjects, on) {
    const now = new Set(state.cohort.selected.map(String));
    subjects.forEach((s) => (on ? now.add(String(s)) : now.delete(String(s))));
    state.cohort.selected = state.patients.filter((p) => now.has(String(p.subject))).map((p) => p.subject);
    document.querySelectorAll("#patient-list input.pick").forEach((c) => {
      c.checked = now.has(c.id.slice("pick-".length));
    });
    updateCohortCount();
    remember(true);
  }

  function updateCohortCount() {
    $("cohort-count").textContent = "(" + state.cohort.selected.length + ")";
    announce(plural(state.cohort.selected.length, "patient") + " in the cohort");
  }

  function similarTo(query) {
    $("q").value = query.text || "";
    show("patients", query).then(() => remember());
  }

  // ---- cohort ----
  function renderCohort() {
    const rows = state.patients.filter((p) => state.cohort.selected.map(String).includes(String(p.subject)));
    const body = document.querySelector("#cohort-table tbody");
    body.replaceChildren();
    rows.forEach((p) => {
      const tr = el("tr");
      const th = el("th");
      th.scope = "row";
      th.append(button(String(p.subject), "link", () => openPatient(p.subject)));
      tr.append(th, el("td", null, p.admissions.join(", ")), el("td", "num", p.score.toFixed(3)),
                el("td", null, p.matches.map((m) => m.id).join(", ")),
                el("td", null, p.first_date || ""), el("td", null, p.last_date || ""));
      body.append(tr);
    });
    $("cohort-table").hidden = !rows.length;
    $("export-csv").disabled = $("export-parquet").disabled = !rows.length;
    $("cohort-head").textContent = rows.length
      ? rows.length + " patients from the patient search for " + describe(state.query) + " (" + state.cohort.request.mode + ")"
      : "Select patients in the patients view to build a cohort.";
  }

  async function exportCohort(format) {
    const name = $("cohort-name").value.trim() || "cohort";
    const body = Object.assign({}, state.cohort.request, { select: state.cohort.selected, name, format });
    let r;
    try { r = await api("POST", "/cohorts/export", body, true); }
    catch (e) { showError(e); return; }
    showError(null);
    const blob = await r.blob();
    const a = el("a");
    a.href = URL.createObjectURL(blob);
    a.download = name.replace(/[^A-Za-z0-9._-]+/g, "-") + "." + format;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    announce("exported " + state.cohort.selected.length + " patients as " + format.toUpperCase());
  }

  // ---- a note, a patient, and the patient's course as a picture ----
  async function openNote(id) {
    let note, tl;
    try {
      note = await api("GET", "/notes/" + encodeURIComponent(id));
      tl = note.subject === null ? { notes: [note] }
        : await api("GET", "/patients/" + encodeURIComponent(note.subject) + "/timeline");
    } catch (e) { showError(e); return; }
    showError(null);
    state.noteId = note.id;
    state.patientId = note.subject;
    state.timeline = tl.notes;
    detail(true);
    $("note-title").textContent = "Note " + note.id + (note.category ? " · " + note.category : "");
    $("note-badges").replaceChildren(...badges(note).childNodes);
    $("note-text").replaceChildren(highlighted(note.text !== null ? note.text : (note.snippet || "") + " … (this index keeps only openings)", state.terms));
    const pos = tl.notes.findIndex((n) => String(n.id) === String(note.id));
    $("timeline-pos").textContent = "note " + (pos + 1) + " of " + tl.notes.length + " for this patient";
    $("prev-note").disabled = pos <= 0;
    $("next-note").disabled = pos < 0 || pos >= tl.notes.length - 1;
    $("similar-patients").disabled = $("open-patient").disabled = note.subject === null;
    drawCourse(tl.notes, note.id);
    listTimeline(tl.notes, pos);
    $("note-title").focus();
    remember();
  }

  async function openPatient(subject) {
    let tl;
    try { tl = await api("GET", "/patients/" + encodeURIComponent(subject) + "/timeline"); }
    catch (e) { showError(e); return; }
    showError(null);
    state.noteId = null;
    state.patientId = tl.subject;
    state.timeline = tl.notes;
    detail(false);
    $("note-title").textContent = "Patient " + tl.subject + " · " + tl.count + " notes";
    const admissions = new Set(tl.notes.map((n) => n.admission).filter((h) => h !== null));
    const dates = tl.notes.map((n) => n.time).filter(Boolean);
    $("note-badges").replaceChildren(el("span", "badge pt", "patient " + tl.subject),
      el("span", "badge", plural(admissions.size, "admission")),
      el("span", "badge date", dates.length ? dates[0] + " – " + dates[dates.length - 1] : "undated"));
    $("similar-patients").disabled = false;
    drawCourse(tl.notes, null);
    listTimeline(tl.notes, -1);
    $("note-title").focus();
    remember();
  }

  function detail(isNote) {
    $("note").hidden = false;
    document.querySelector(".panes").classList.add("reading");
    $("note-text").hidden = !isNote;
    ["prev-note", "next-note", "timeline-pos", "more-like", "open-patient"].forEach((id) => { $(id).hidden = !isNote; });
  }

  function listTimeline(notes, pos) {
    const list = $("timeline");
    list.replaceChildren();
    notes.forEach((n, i) => {
      const li = el("li", i === pos ? "current" : "");
      const hit = state.hitIds.has(String(n.id)) ? " · search hit" : "";
      const b = button((n.time || "undated") + " · " + (n.category || "note") + " · " + n.id + hit, "link", () => openNote(n.id));
      if (i === pos) b.setAttribute("aria-current", "true");
      li.append(b);
      list.append(li);
    });
  }

  // Every note of the patient on a time axis, a lane per category, admissions as spans,
  // the search's hits ringed; a mark opens its note.
  function drawCourse(notes, currentId) {
    const box = $("course");
    const dated = notes.filter((n) => n.time);
    if (!dated.length) { box.replaceChildren(el("p", "muted", "No dated notes to draw.")); $("legend").replaceChildren(); return; }
    const t = (d) => Date.parse(String(d).slice(0, 10) + "T00:00:00Z");
    let lo = Math.min(...dated.map((n) => t(n.time))), hi = Math.max(...dated.map((n) => t(n.time)));
    if (hi === lo) { lo -= 86400000; hi += 86400000; }
    const cats = Array.from(new Set(dated.map((n) => n.category || "note"))).sort();
    const W = 640, left = 118, right = 12, top = 26, axis = 24, gap = 12, STACK = 6;
    const x = (d) => left + (W - left - right) * (t(d) - lo) / (hi - lo);
    // Notes close in time stack within their lane (then step right), so each stays
    // clickable however many a day holds.
    const place = new Map(), depth = {};
    cats.forEach((c) => {
      const mine = dated.filter((n) => (n.category || "note") === c).sort((a, b) => t(a.time) - t(b.time));
      let start = -Infinity, j = 0;
      mine.forEach((n) => {
        const cx = x(n.time);
        if (cx - start > gap) { start = cx; j = 0; } else j += 1;
        place.set(n, { dx: Math.floor(j / STACK) * gap, row: j % STACK });
        depth[c] = Math.max(depth[c] || 1, Math.min(j, STACK - 1) + 1);
      });
    });
    const laneTop = {};
    let y = top;
    cats.forEach((c) => { laneTop[c] = y; y += 10 + depth[c] * gap; });
    const H = y + axis;
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "course-chart", role: "group",
                               "aria-label": "Patient course: " + dated.length + " notes over time, by category; search hits ringed" });
    const spans = new Map();
    dated.forEach((n) => {
      if (n.admission === null || n.admission === undefined) return;
      const s = spans.get(n.admission) || [n.time, n.time];
      if (t(n.time) < t(s[0])) s[0] = n.time;
      if (t(n.time) > t(s[1])) s[1] = n.time;
      spans.set(n.admission, s);
    });
    for (const [hadm, [a, b]] of spans) {
      const r = svg("rect", { x: x(a) - 3, y: 6, width: Math.max(6, x(b) - x(a) + 6), height: 12, rx: 3, class: "admission" });
      const title = svg("title");
      title.textContent = "admission " + hadm + ": " + a + " – " + b;
      r.append(title);
      chart.append(r);
    }
    cats.forEach((c) => {
      const mid = laneTop[c] + 5 + gap / 2;
      const name = svg("text", { x: 4, y: mid + 4, class: "tick" });
      name.textContent = c.length > 18 ? c.slice(0, 17) + "…" : c;
      chart.append(name, svg("line", { x1: left, x2: W - right, y1: mid, y2: mid, class: "lane" }));
    });
    const admissionsLabel = svg("text", { x: 4, y: 16, class: "tick" });
    admissionsLabel.textContent = "admissions";
    chart.append(admissionsLabel);
    dated.forEach((n) => {
      const cat = n.category || "note";
      const hit = state.hitIds.has(String(n.id));
      const current = currentId !== null && String(n.id) === String(currentId);
      const g = svg("g", { class: "mark" + (hit ? " hit" : "") + (current ? " current" : "") });
      g.dataset.noteId = n.id;
      const at = place.get(n);
      const cx = Math.min(W - 6, x(n.time) + at.dx), cy = laneTop[cat] + 5 + gap / 2 + at.row * gap;
      if (hit) g.append(svg("circle", { cx, cy, r: 6, class: "ring" }));
      g.append(svg("circle", { cx, cy, r: hit ? 3.5 : 4.5, fill: colorOf(n.category) }));
      clickable(g, "note " + n.id + ", " + cat + ", " + n.time + (hit ? ", search hit" : "") + (current ? ", open" : ""), () => openNote(n.id));
      chart.append(g);
    }
    );
    const ticks = 4;
    for (let i = 0; i <= ticks; i++) {
      const ms = lo + (hi - lo) * i / ticks;
      const label = svg("text", { x: left + (W - left - right) * i / ticks, y: H - 6, class: "tick",
                                  "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle" });
      label.textContent = new Date(ms).toISOString().slice(0, 10);
      chart.append(label);
    }
    box.replaceChildren(chart);
    const legend = $("legend");
    legend.replaceChildren(...cats.map((c) => {
      const li = el("li");
      const swatch = el("span", "swatch");
      swatch.style.background = colorOf(c === "note" ? null : c);
      li.append(swatch, " " + c);
      return li;
    }), (() => { const li = el("li"); li.append(el("span", "swatch ring-key"), " search hit"); return li; })(),
        (() => { const li = el("li"); li.append(el("span", "swatch adm-key"), " admission"); return li; })());
  }

  function step(delta) {
    const pos = state.timeline.findIndex((n) => String(n.id) === String(state.noteId));
    const next = state.timeline[pos + delta];
    if (next && state.noteId !== null) openNote(next.id);
  }

  function closeDetail(focus) {
    $("note").hidden = true;
    state.noteId = null;
    state.patientId = null;
    document.querySelector(".panes").classList.remove("reading");
    if (focus !== false) { $("q").focus(); remember(); }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("search-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const text = $("q").value.trim();
      if (!text) { showError(new Error("Type a question or a passage to search for.")); return; }
      show(state.view === "cohort" ? "patients" : state.view, { text });
    });
    $("facets").addEventListener("change", () => { if (state.query) show(state.view === "cohort" ? "patients" : state.view); });
    document.querySelectorAll("#views .view").forEach((b) => b.addEventListener("click", async () => {
      await show(b.dataset.view);
      remember();
    }));
    $("key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      state.key = $("api-key").value.trim();
      sessionStorage.setItem("mimicsearch-key", state.key);
      $("key-form").hidden = true;
      loadInfo();
    });
    $("prev-note").addEventListener("click", () => step(-1));
    $("next-note").addEventListener("click", () => step(1));
    $("close-note").addEventListener("click", () => closeDetail());
    $("more-like").addEventListener("click", () => {
      const q = { note_id: state.noteId };
      $("q").value = "";
      show("notes", q);
    });
    $("similar-patients").addEventListener("click", () => similarTo(
      state.noteId !== null ? { note_id: state.noteId } : { subject_id: state.patientId }));
    $("open-patient").addEventListener("click", () => openPatient(state.patientId));
    $("select-top").addEventListener("click", () => {
      const n = Math.max(1, parseInt($("top-n").value, 10) || 1);
      state.cohort.selected = [];
      select(state.patients.slice(0, n).map((p) => p.subject), true);
    });
    $("select-page").addEventListener("click", () => select(state.patients.map((p) => p.subject), true));
    $("select-none").addEventListener("click", () => select(state.patients.map((p) => p.subject), false));
    $("to-cohort").addEventListener("click", () => { show("cohort"); remember(); });
    $("cohort-name").addEventListener("change", () => remember(true));
    $("export-csv").addEventListener("click", () => exportCohort("csv"));
    $("export-parquet").addEventListener("click", () => exportCohort("parquet"));
    window.addEventListener("popstate", () => { restore(); });
    document.addEventListener("keydown", (ev) => {
      const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
      if (ev.key === "/" && !typing) { ev.preventDefault(); $("q").focus(); }
      else if (ev.key === "Escape" && !$("note").hidden) closeDetail();
      else if (!typing && !$("note").hidden && ev.key === "ArrowLeft") step(-1);
      else if (!typing && !$("note").hidden && ev.key === "ArrowRight") step(1);
    });
    loadInfo().then((ok) => { if (ok) restore(); });
  });
})();
